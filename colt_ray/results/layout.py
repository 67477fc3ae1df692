"""Where every results file lives. The only module that knows file and directory names.

An output directory ``OUT`` (one ``colt-ray ticket`` run, or ``<storage>/<sweep>/`` for a sweep) holds::

    OUT/runs/<run_id>.parquet                      one row per run, rewritten when its status changes
    OUT/cycles/<run_id>-c<cycle:04d>.parquet       every row of one (run, cycle): shard rows + the ticket row
    OUT/layers/<run_id>-c<cycle:04d>.parquet       one row per (run, cycle, layer)
    OUT/tickets/<run_id>/cycle-<cycle:04d>.safetensors
    OUT/trials.parquet                             sweep level, one row per trial
    OUT/tune/                                      a sweep's Ray Tune experiment
    OUT/report/                                    what ``colt-ray report`` writes (default)

After a compaction (``colt-ray compact``, and every sweep when it ends) each table folder holds a few large
files ``<table>/compacted-g<generation:06d>-<i:04d>.parquet`` instead of its parts; parts written later (a
resumed sweep) sit beside them until the next compaction merges them. Readers keep one row per key: a part's
row over a compacted one, a later generation's over an earlier one's (:func:`source_rank`).

Writers first write ``<name>.tmp-<random>`` in the same directory and then rename it, so a reader that only
takes names ending in ``.parquet`` (:func:`is_result_file`) never sees a half-written file.
``OUT`` may be a local path or a URI that ``pyarrow.fs`` understands (``s3://bucket/prefix``, ``file:///...``).
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any, Optional, Union

from colt_ray.core.errors import ConfigError, one_line

PathLike = Union[str, "os.PathLike[str]"]

RUNS_DIR = "runs"
CYCLES_DIR = "cycles"
LAYERS_DIR = "layers"
TICKETS_DIR = "tickets"
TRIALS_FILE = "trials.parquet"
REPORT_DIR = "report"
TUNE_DIR = "tune"
COMPACTED_PREFIX = "compacted-g"
TABLE_DIRS = (RUNS_DIR, CYCLES_DIR, LAYERS_DIR)
SUFFIX = ".parquet"
TMP_MARK = ".tmp-"

_SAFE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")
_COMPACTED = re.compile(r"^compacted-g(\d{6})-\d{4}\.parquet$")


def is_uri(out: PathLike) -> bool:
    """True for ``scheme://...`` locations other than ``file://`` (those are treated as local paths)."""
    s = os.fspath(out)
    return "://" in s and not s.startswith("file://")


def local_path(out: PathLike) -> str:
    """A local path for ``out``: ``file:///x`` becomes ``/x``, ``~`` is expanded."""
    s = os.fspath(out)
    if s.startswith("file://"):
        import pyarrow.fs as pafs

        _, s = pafs.FileSystem.from_uri(s)
    return os.path.expanduser(s)


def resolve(out: PathLike, filesystem: Any = None) -> tuple[Optional[Any], str]:
    """``(pyarrow filesystem or None, root path)``; None means plain local I/O through ``os``."""
    if filesystem is not None:
        return filesystem, os.fspath(out)
    if is_uri(out):
        import pyarrow.fs as pafs

        try:
            fs, root = pafs.FileSystem.from_uri(os.fspath(out))
        except Exception as e:  # pyarrow raises several types for bad URIs
            raise ConfigError("out", f"{os.fspath(out)} is not a usable location: {one_line(e)}") from e
        return fs, root.rstrip("/")
    return None, local_path(out)


def join(root: str, *parts: str, remote: bool = False) -> str:
    """Join path parts: ``os.path.join`` locally, ``/`` for filesystem paths."""
    if remote:
        return "/".join([root.rstrip("/"), *parts]) if root else "/".join(parts)
    return os.path.join(root, *parts)


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is safe as a file name (and not a compacted file's name), else raise ValueError."""
    if not isinstance(run_id, str) or not _SAFE_ID.match(run_id):
        raise ValueError(f"run_id {run_id!r} is not a safe file name (letters, digits, _ . = + -)")
    if run_id.startswith(COMPACTED_PREFIX):
        raise ValueError(f"run_id {run_id!r} starts with {COMPACTED_PREFIX!r}, which names compacted files")
    return run_id


def compacted_name(generation: int, index: int) -> str:
    """``compacted-g<generation:06d>-<index:04d>.parquet``: file ``index`` of compaction ``generation``."""
    return f"{COMPACTED_PREFIX}{int(generation):06d}-{int(index):04d}{SUFFIX}"


def compacted_generation(path: str) -> Optional[int]:
    """The generation of a compacted file's path, None for a part (or any other name)."""
    base = path.rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]
    m = _COMPACTED.match(base)
    return int(m.group(1)) if m else None


def source_rank(path: str) -> tuple[int, int, str]:
    """The order in which readers take the files of a table, later ones winning for the same key: compacted
    files by generation, then parts (always written after the compaction that would have merged them), each
    in path order."""
    generation = compacted_generation(path)
    return (0, generation, path) if generation is not None else (1, 0, path)


def _part_name(run_id: str, cycle: int) -> str:
    if int(cycle) < 0:
        raise ValueError(f"cycle must be >= 0, got {cycle}")
    return f"{check_run_id(run_id)}-c{int(cycle):04d}{SUFFIX}"


def runs_rel(run_id: str) -> tuple[str, str]:
    """Path parts of a run's file relative to ``OUT``: ``("runs", "<run_id>.parquet")``."""
    return RUNS_DIR, check_run_id(run_id) + SUFFIX


def cycles_rel(run_id: str, cycle: int) -> tuple[str, str]:
    """``("cycles", "<run_id>-c<cycle:04d>.parquet")``."""
    return CYCLES_DIR, _part_name(run_id, cycle)


def layers_rel(run_id: str, cycle: int) -> tuple[str, str]:
    """``("layers", "<run_id>-c<cycle:04d>.parquet")``."""
    return LAYERS_DIR, _part_name(run_id, cycle)


def runs_part(out: PathLike, run_id: str) -> str:
    """``OUT/runs/<run_id>.parquet``."""
    return path_at(out, *runs_rel(run_id))


def cycles_part(out: PathLike, run_id: str, cycle: int) -> str:
    """``OUT/cycles/<run_id>-c<cycle:04d>.parquet``."""
    return path_at(out, *cycles_rel(run_id, cycle))


def layers_part(out: PathLike, run_id: str, cycle: int) -> str:
    """``OUT/layers/<run_id>-c<cycle:04d>.parquet``."""
    return path_at(out, *layers_rel(run_id, cycle))


def ticket_rel(run_id: str, cycle: int) -> tuple[str, str, str]:
    """``tickets/<run_id>/cycle-<cycle:04d>.safetensors``, relative to OUT."""
    if int(cycle) < 0:
        raise ValueError(f"cycle must be >= 0, got {cycle}")
    return TICKETS_DIR, check_run_id(run_id), f"cycle-{int(cycle):04d}.safetensors"


def theta0_rel(run_id: str) -> tuple[str, str, str]:
    """``tickets/<run_id>/theta0.safetensors``: the run's theta_0, which its ticket files refer to."""
    return TICKETS_DIR, check_run_id(run_id), "theta0.safetensors"


def ticket_path(out: PathLike, run_id: str, cycle: int) -> str:
    """``OUT/tickets/<run_id>/cycle-<cycle:04d>.safetensors`` (the ticket's masks and weights)."""
    return path_at(out, *ticket_rel(run_id, cycle))


def trials_path(out: PathLike) -> str:
    """``OUT/trials.parquet`` (sweep level)."""
    return path_at(out, TRIALS_FILE)


def report_dir(out: PathLike) -> str:
    """``OUT/report`` (the default destination of ``colt-ray report``)."""
    return path_at(out, REPORT_DIR)


def sweep_dir(storage: PathLike, sweep: str) -> str:
    """``<storage>/<sweep>``: a sweep's output directory (same layout as one run's)."""
    return path_at(storage, check_run_id(sweep))


def tmp_name(path: str) -> str:
    """A fresh temporary name next to ``path``: ``<path>.tmp-<random>`` (never ends in ``.parquet``)."""
    return f"{path}{TMP_MARK}{secrets.token_hex(6)}"


def is_result_file(name: str) -> bool:
    """True for names a reader should load: ``*.parquet``, not hidden, not a temporary file."""
    base = name.rsplit("/", 1)[-1]
    return base.endswith(SUFFIX) and not base.startswith(".") and TMP_MARK not in base


def classify(path: str) -> Optional[str]:
    """``"runs"``/``"cycles"``/``"layers"``/``"trials"`` for a results file path, else None."""
    parts = path.replace(os.sep, "/").split("/")
    if not is_result_file(parts[-1]):
        return None
    if parts[-1] == TRIALS_FILE:
        return "trials"
    if len(parts) >= 2 and parts[-2] in TABLE_DIRS:
        return parts[-2]
    return None


def path_at(out: PathLike, *parts: str) -> str:
    """``OUT/<parts>``: a URI for a remote ``out``, else a local path."""
    if is_uri(out):
        return join(os.fspath(out), *parts, remote=True)
    return os.path.join(local_path(out), *parts)
