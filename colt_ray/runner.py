"""Glue between a ticket search and its results: the Parquet/ticket sink and the driver-side progress line.

Used by the command line (every backend) and by sweep trials, so all write the same files. The Ray
coordinator runs in the same process as its sink: records never cross a process boundary to be written.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any, Optional

from colt_ray.core.tickets.io import THETA0_FILE, theta_file_bytes, ticket_bytes
from colt_ray.core.tickets.methods import exceeds_drop, selection_acc
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.search import Prepared
from colt_ray.results import layout
from colt_ray.results.writer import ResultsWriter, write_bytes_atomic


def _versions() -> dict[str, Any]:
    import torch

    ray_version = sys.modules["ray"].__version__ if "ray" in sys.modules else None
    return {"torch_version": torch.__version__, "python_version": platform.python_version(), "ray_version": ray_version}


@functools.lru_cache(maxsize=64)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def data_identity(data_root: Optional[str]) -> dict[str, Optional[str]]:
    """``data_file`` and ``data_fingerprint`` of the runs row: for a data file, its name and the first 12 hex
    of its content's sha256 (read once per process and file version); for a folder, its name and the sha256 of
    its listing (relative paths and sizes: a folder of images is not read whole); nulls for an embedded dataset
    or a root this process cannot read (an object-store URI)."""
    if not data_root or "://" in data_root or not os.path.exists(data_root):
        return {"data_file": None, "data_fingerprint": None}
    root = os.path.abspath(data_root)
    if os.path.isfile(root):
        st = os.stat(root)
        return {"data_file": os.path.basename(root), "data_fingerprint": _fingerprint(root, st.st_size, st.st_mtime_ns)}
    listing = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            listing.update(f"{os.path.relpath(path, root)}\t{os.path.getsize(path)}\n".encode())
    return {"data_file": os.path.basename(root.rstrip(os.sep)) + "/", "data_fingerprint": listing.hexdigest()[:12]}


class ResultsSink:
    """Receives one ``CycleRecord`` per cycle: writes its Parquet rows and ticket file, keeps run totals,
    and rewrites the ``runs`` row as the run starts, finishes or fails."""

    def __init__(
        self,
        prepared: Prepared,
        out: str,
        extra: Optional[dict[str, Any]] = None,
        echo: Callable[[str], None] | None = None,
    ):
        self.prepared, self.out = prepared, out
        self.writer = ResultsWriter(out)
        self.extra = dict(extra or {})
        self.data = data_identity(prepared.cfg.data.data_root)  # which file or folder the run read
        self.echo = echo
        self.started = dt.datetime.now(dt.timezone.utc)
        self._t0 = time.perf_counter()
        self.dense_acc: Optional[float] = None
        self.last: Optional[CycleRecord] = None
        self.reported: Optional[CycleRecord] = None  # the run's ticket: the last, or the sparsest within max_acc_drop
        self.sample_epochs = 0
        self.chain_seconds = 0.0  # the critical path of the rounds so far (``critical_path_seconds``)
        self.critical_path: Optional[float] = None
        self.dense_selection: Optional[float] = None
        self._theta0_written = False

    # ---- run row --------------------------------------------------------------------------------
    def run_row(self, status: str, error: Optional[str] = None) -> dict[str, Any]:
        p = self.prepared
        row = {"run_id": p.run_id, **p.cfg.recorded_flat(), **_versions(), **self.data, **self.extra}
        row.update(
            status=status, error=error, started_at=self.started, num_classes=p.num_classes, dense_acc=self.dense_acc
        )
        if status != "running":
            row.update(finished_at=dt.datetime.now(dt.timezone.utc), wall_seconds=time.perf_counter() - self._t0)
        if self.last is not None:
            t = self.reported.ticket_row
            row.update(
                final_sparsity=t["sparsity"],
                final_sparsity_all=t["sparsity_all"],
                final_acc_best=t["acc_best"],
                final_acc_final=t["acc_final"],
                reported_cycle=self.reported.cycle,
                cycles_done=self.last.cycle,
                sample_epochs=self.sample_epochs,
                critical_path_seconds=self.critical_path,
                rounds=self.reported.cycle,
            )
        return row

    def _within_limit(self, record: CycleRecord) -> bool:
        """Whether ``record``'s ticket may be the run's reported one (``max_acc_drop``: evaluated, within D)."""
        limit = self.prepared.cfg.ticket.max_acc_drop
        if limit is None or record.cycle == 0:
            return True
        acc = selection_acc(record.ticket_row)
        return (
            acc is not None and self.dense_selection is not None and not exceeds_drop(limit, self.dense_selection, acc)
        )

    def start(self) -> None:
        self.writer.write_run(self.run_row("running"))

    def finish(self, status: str = "completed", error: Optional[str] = None) -> None:
        self.writer.write_run(self.run_row(status, error))

    # ---- per cycle ------------------------------------------------------------------------------
    def __call__(self, record: CycleRecord) -> None:
        p = self.prepared
        meta = {
            "arch": p.cfg.model.arch,
            "dataset": p.cfg.data.dataset,
            "in_shape": list(p.bundle.in_shape),
            "num_classes": p.num_classes,
            "run_id": p.run_id,
            "cycle": record.cycle,
            "method": p.cfg.ticket.method,
            "sparsity": record.mask.sparsity(),
            "prune_groups": list(p.cfg.prune.prune_groups),
        }
        # through the results' filesystem layer: a local directory or an object store (s3://, gs://), atomically;
        # a ticket that rewinds to theta_0 refers to the run's theta0.safetensors instead of repeating it
        ref = None
        if record.theta is p.ctx.theta0:
            ref = THETA0_FILE
            if not self._theta0_written:
                write_bytes_atomic(self.out, layout.theta0_rel(p.run_id), theta_file_bytes(record.theta))
                self._theta0_written = True
        ticket = ticket_bytes(record.theta, record.mask, meta, theta_ref=ref)
        write_bytes_atomic(self.out, layout.ticket_rel(p.run_id, record.cycle), ticket)
        self.writer.write_cycle(p.run_id, record.cycle, record.cycle_rows, record.layer_rows)
        self.sample_epochs += sum(int(r["sample_epochs"] or 0) for r in record.cycle_rows)
        if record.cycle == 0:
            self.dense_acc = record.ticket_row["acc_best"]
            self.dense_selection = selection_acc(record.ticket_row)
        self.last = record
        if self._within_limit(record):
            self.reported = record
            self.critical_path = self.chain_seconds + float(record.ticket_row["wall_seconds"] or 0.0)
        self.chain_seconds += round_seconds(record)
        if self.echo:
            self.echo(progress_line(record, time.perf_counter() - self._t0))


def round_seconds(record: CycleRecord) -> float:
    """The wall time this cycle adds to the mask chain on k + 1 workers: its slowest shard (the shards train
    in parallel; the ticket evaluation beside them is off the chain), or, for a method without shards, its
    level's training, which proposed the next mask."""
    shards = [float(r["wall_seconds"] or 0.0) for r in record.cycle_rows if r["shard"] is not None]
    return max(shards) if shards else float(record.ticket_row["wall_seconds"] or 0.0)


def progress_line(record: CycleRecord, elapsed: float) -> str:
    """``cycle 2 | sparsity 0.2775 | ticket test_acc 0.953 | shard test_acc 0.991 0.978 | 12.3 s``: the best
    epoch's accuracy on the split that selects (``val_acc`` with a validation split, else ``test_acc``), as
    the progress bars name it."""
    t = record.ticket_row
    parts = [f"cycle {record.cycle}", f"sparsity {t['sparsity']:.4f}"]
    key, name = ("val_acc_best", "val_acc") if t.get("val_acc_best") is not None else ("acc_best", "test_acc")
    if t[key] is not None:
        parts.append(f"ticket {name} {t[key]:.3f}")
    shards = [r for r in record.cycle_rows if r["shard"] is not None and r.get(key) is not None]
    if shards:
        parts.append(f"shard {name} " + " ".join(f"{r[key]:.3f}" for r in shards))
    if t["overlap"] is not None:
        parts.append(f"overlap {t['overlap']:.3f}")
    parts.append(f"{elapsed:.1f} s")
    return " | ".join(parts)
