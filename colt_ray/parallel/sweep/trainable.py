"""The Tune trial function: one ticket search per trial, reported and checkpointed after every cycle.

The trial turns Tune's flat config into a ``RunConfig`` (``RunConfig.from_flat``), prepares the run under a
run id that is stable for the trial (``<config hash>-<trial id>``, so a restored sweep rewrites the same
files), and runs the search: on the Ray backend with the coordinator in this process and its shard trainers
in the trial's placement group (a ``Coordinator`` whose actors start before the data load), else in this
process (``run_local``). Each cycle's record is written to the sweep directory, then its ``Resume`` state
(``state.pack_state``) replaces the trial's one checkpoint file in the sweep directory
(``state.resume_rel``), then the cycle is ``tune.report``-ed without a Tune checkpoint. A Tune checkpoint
would make the driver rewrite its whole experiment snapshot after every cycle of every trial (see
``tuner.build_tuner``); this file is the trial's alone, so a restored or retried trial finds its latest
state whatever the driver's last snapshot says.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

from colt_ray.core.config import RunConfig
from colt_ray.core.errors import one_line
from colt_ray.core.tickets.methods import Resume
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.parallel.sweep.efficiency import training_cpu_seconds
from colt_ray.parallel.sweep.metrics import METRICS
from colt_ray.parallel.sweep.state import Totals, TrialState, load_state, pack_state, resume_rel, unpack_state
from colt_ray.results.writer import read_bytes, write_bytes_atomic

Report = Callable[..., None]


def trial_run_id(cfg: RunConfig, trial_id: str) -> str:
    """The run id of a sweep trial: the config hash plus Tune's trial id (unique, stable across restore)."""
    return f"{cfg.run_id()}-{trial_id}"


def cycle_metrics(record: CycleRecord, totals: Totals, target: Optional[float], run_id: str) -> dict[str, Any]:
    """The metrics reported after a cycle (and kept as the trial's last result); updates ``totals``.

    With a ``target`` sparsity, the ``*_at_target`` metrics are those of the first ticket at or past it (its
    validation accuracy selects; its test accuracy at the best-validation epoch is reported beside it), with
    the rounds, sample-epochs and wall seconds it took; before a ticket gets there the accuracies are 0 and the
    costs infinite (the worst value for their direction)."""
    t = record.ticket_row
    acc, val = t["acc_best"], t.get("val_acc_best")
    if target is not None and totals.target_cycle is None and t["sparsity"] >= target:
        totals.target_cycle = record.cycle
        totals.acc_at_target = _num(acc, 0.0)
        totals.val_acc_at_target = _num(val, 0.0)
        totals.test_acc_at_target = _num(t.get("test_acc_at_best_val"), 0.0)
        totals.sample_epochs_at_target = int(totals.sample_epochs)
        totals.wall_at_target = float(totals.wall_seconds)
    values = {m.name: m.value(t, totals) for m in map(METRICS.get, METRICS) if target is not None or not m.target}
    metrics = {
        "cycle": record.cycle,
        "sparsity": values["sparsity"],
        "sparsity_pct": sparsity_pct(t["sparsity"]),
        **{n: v for n, v in values.items() if not METRICS.get(n).target},
        "prepare_seconds": float(totals.prepare_seconds),
        "checkpoint_seconds": float(totals.checkpoint_seconds),
        "train_cpu_seconds": float(totals.train_cpu_seconds),
        "search_done": bool(record.done),
        "run_id": run_id,
        **{n: v for n, v in values.items() if METRICS.get(n).target},  # only with a target (``values``)
    }
    return metrics


def sparsity_pct(sparsity: float) -> int:
    """Whole percent of prunable weights pruned: ASHA's axis when trials prune at different rates (it never
    decreases, since a ticket's mask only loses weights)."""
    return int(math.floor(100 * float(sparsity) + 1e-6))  # 0.29 is 28.999...: not 28


class TrialSink:
    """The sink of a trial's search: results files first, then the trial's checkpoint file in ``out``
    (``checkpoint``: its path relative to ``out``), then ``tune.report``."""

    def __init__(
        self, results: Any, totals: Totals, target: Optional[float], report: Report, out: str, checkpoint: tuple
    ):
        self.results, self.totals, self.target, self.report = results, totals, target, report
        self.out, self.checkpoint = out, checkpoint
        self._t0, self._wall0 = time.perf_counter(), totals.wall_seconds

    def __call__(self, record: CycleRecord) -> None:
        start = time.perf_counter()
        self.results(record)  # the Parquet rows and ticket of this cycle, replacing any earlier attempt's
        self.totals.sample_epochs = self.results.sample_epochs
        self.totals.chain_seconds = self.results.chain_seconds
        self.totals.dense_acc = self.results.dense_acc
        self.totals.dense_selection = self.results.dense_selection
        self.totals.wall_seconds = self._wall0 + time.perf_counter() - self._t0
        self.totals.train_cpu_seconds += training_cpu_seconds(record.cycle_rows)
        metrics = cycle_metrics(record, self.totals, self.target, record.run_id)
        # after the cycle's results, before its report: a resumed trial redoes at most the cycle in flight,
        # and rewrites the same (run, cycle) parts
        state = pack_state(record, self.totals, metrics, theta0=self.results.prepared.ctx.theta0)
        write_bytes_atomic(self.out, self.checkpoint, state)
        self.report(metrics)
        # the results files, the checkpoint and the report of this cycle (counted from the next one on)
        self.totals.checkpoint_seconds += time.perf_counter() - start


def train_trial(
    config: dict[str, Any],
    out: str = "",
    sweep: str = "",
    target: Optional[float] = None,
    keep_gpus: bool = True,
    data: Optional[dict] = None,
) -> None:
    """Tune function trainable: run the ticket search of ``config``, writing results under ``out``.
    ``keep_gpus``: the driver's GPU policy kept the GPU shares when it sized the trial's bundles. ``data``: the
    sweep's datasets in the object store (``datasets.put_datasets``); a trial whose dataset is not among them
    loads its own."""
    from ray import tune

    from colt_ray.core.tickets.search import prepare
    from colt_ray.parallel.resources import fit_to_cluster
    from colt_ray.parallel.sweep.datasets import trial_bundle
    from colt_ray.runner import ResultsSink

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "checkpoint created" line every cycle
    trial_id = tune.get_context().get_trial_id()
    # the same resources as the bundles reserved for this trial (see bundles.trial_bundles)
    cfg = fit_to_cluster(RunConfig.from_flat(config), keep_gpus)
    state = restored_state(out, trial_id)
    if state is not None and state.done:  # the search had finished; only the final report was lost
        tune.report(state.metrics)
        return
    started = time.perf_counter()
    with trainers(cfg, trial_run_id(cfg, trial_id)) as coordinator:  # on Ray the actors start while the data load
        bundle, data_ref = trial_bundle(cfg, data)  # the sweep's copy in the object store, if it holds one
        prepared = prepare(cfg, run_id=trial_run_id(cfg, trial_id), bundle=bundle)
        results = ResultsSink(prepared, out, extra={"sweep": sweep, "trial_id": trial_id})
        totals = state.totals if state is not None else Totals()
        totals.prepare_seconds += time.perf_counter() - started
        results.sample_epochs, results.dense_acc = totals.sample_epochs, totals.dense_acc
        results.chain_seconds = totals.chain_seconds
        results.start()
        try:
            resume = state.resume if state else None
            if resume is not None:
                resume.dense_acc = results.dense_selection = state.totals.dense_selection
                if resume.theta is None:  # the checkpoint's rewind point is theta_0, rebuilt from the config
                    resume.theta = prepared.ctx.theta0
            sink = TrialSink(results, totals, target, tune.report, out, resume_rel(trial_id))
            run_search(prepared, sink, resume, coordinator, data_ref)
        except Exception as exc:
            results.finish("failed", one_line(f"{type(exc).__name__}: {exc}"))
            raise
        results.finish("completed")


@contextlib.contextmanager
def trainers(cfg: RunConfig, run_id: str) -> Iterator[Any]:
    """The trial's trainer actors (a ``Coordinator`` in the trial's placement group, named after ``run_id``) on
    the Ray backend, else None; stopped on exit."""
    if cfg.backend != "ray":
        yield None
        return
    from colt_ray.parallel.backend import open_coordinator

    with open_coordinator(cfg, name=run_id) as coordinator:
        yield coordinator


def restored_state(out: str, trial_id: str) -> Optional[TrialState]:
    """The state of this trial's latest checkpoint (a retry or a restored sweep), else None: its checkpoint
    file in ``out``, else (a sweep started before trials kept their own) Tune's checkpoint."""
    from ray import tune

    data = read_bytes(out, resume_rel(trial_id))
    if data is not None:
        return unpack_state(data)
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        return load_state(path)


def run_search(
    prepared: Any,
    sink: Callable[[CycleRecord], None],
    resume: Optional[Resume],
    coordinator: Any = None,
    data_ref: Any = None,
) -> CycleRecord:
    """Run on the configured backend: ``ray`` (the ``coordinator``'s actors, in the trial's placement group;
    ``data_ref``: the sweep's reference to the run's data, if it holds one), else in this process (``local``,
    ``batched``)."""
    if coordinator is not None:
        return coordinator.attach(prepared, data_ref).run(sink, resume)
    from colt_ray.core.tickets.search import run_local

    return run_local(prepared, sink, resume)


def _num(value: Any, missing: float = math.nan) -> float:
    return missing if value is None else float(value)
