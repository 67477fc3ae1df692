"""Build (or restore) the Ray Tune experiment of a sweep: param space, Optuna searcher, ASHA, storage.

Tune's own state lives in ``<storage>/<name>/tune/`` (``RunConfig(storage_path=<storage>/<name>,
name="tune")``); the results tables sit next to it in ``<storage>/<name>/`` in the layout of
``colt_ray.results.layout``. ``Tuner.restore`` on that path continues an interrupted sweep. On a local disk the
Optuna study lives in ``<storage>/<name>/optuna/journal.log``, or in the storage a space names
(:func:`study_location`).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Optional

from colt_ray.core.errors import ConfigError, one_line
from colt_ray.parallel.sweep.bundles import TrialResources
from colt_ray.parallel.sweep.spec import Dist, SweepSpec
from colt_ray.parallel.sweep.trainable import train_trial
from colt_ray.results import layout

TUNE_DIR = layout.TUNE_DIR
OPTUNA_JOURNAL = ("optuna", "journal.log")  # the study of a sweep on a local disk (see study_location)
# the storage a sweep started with (sampler.storage / --optuna-storage), read back by --resume
OPTUNA_RECORD = ("optuna", "storage.txt")


def tune_path(out: str) -> str:
    """Where Tune keeps the experiment of the sweep whose results directory is ``out``."""
    return layout.join(out, TUNE_DIR, remote=layout.is_uri(out))


def to_tune(dist: Dist) -> Any:
    """A Tune search-space domain for ``dist`` (int ranges are inclusive of both ends)."""
    from ray import tune

    if dist.kind in ("choice", "grid"):  # a grid's points are chosen by Optuna's GridSampler (make_sampler)
        return tune.choice(list(dist.values))
    lo, hi = dist.values
    if dist.kind == "int":
        return tune.randint(lo, hi + 1)
    if dist.kind == "logint":
        return tune.lograndint(lo, hi + 1)  # Optuna's IntDistribution(lo, hi, log=True)
    return tune.loguniform(lo, hi) if dist.kind == "logfloat" else tune.uniform(lo, hi)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """The flat trial config: fixed settings as constants, searched ones as Tune domains."""
    return {**spec.base_config(), **{k: to_tune(d) for k, d in spec.search.items()}}


def objective_target(spec: SweepSpec) -> Optional[float]:
    """The sparsity at which ``acc_at_target``/``val_acc_at_target`` are measured (None when none is used)."""
    targets = [o.target for o in spec.objectives if o.target is not None]
    return targets[0] if targets else spec.fixed.get("target_sparsity")


def make_sampler(spec: SweepSpec) -> Any:
    """The Optuna sampler a space names (``sampler.kind``), with its options as Optuna's keyword arguments."""
    import optuna

    s = spec.sampler
    if s.kind == "nsga2":
        from colt_ray.parallel.sweep.searchers import NSGAII

        return NSGAII(seed=s.seed, **s.kwargs)
    if s.kind == "grid":  # every searched setting a grid: each point once, in an order drawn from the seed
        from colt_ray.parallel.sweep.searchers import Grid

        return Grid({k: list(d.values) for k, d in spec.search.items()}, seed=s.seed)
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "gp": optuna.samplers.GPSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
        "random": optuna.samplers.RandomSampler,
    }
    return classes[s.kind](seed=s.seed, **s.kwargs)


def study_location(spec: SweepSpec, out: str) -> Optional[str]:
    """Where the sweep's Optuna study lives: ``sampler.storage``/``--optuna-storage`` (an RDB URL or a journal
    file), else on a local disk the journal ``<out>/optuna/journal.log``, else None (an object store: the study
    is kept in memory and pickled with Tune's snapshots)."""
    if spec.sampler.storage:
        return spec.sampler.storage
    if layout.is_uri(out):
        return None
    return os.path.join(layout.local_path(out), *OPTUNA_JOURNAL)


def open_storage(location: str) -> Any:
    """The Optuna storage at ``location`` (as :func:`study_location` gives it): an RDB URL or a journal file,
    appended to at each ask, report and tell and readable meanwhile by ``optuna-dashboard <location>`` or
    ``optuna.load_study(study_name=<sweep name>, storage=<location>)`` (a journal: ``JournalStorage(
    JournalFileBackend(path))``). A ConfigError (one line) when it cannot be opened."""
    import optuna

    try:
        if "://" in location:
            return optuna.storages.RDBStorage(location)
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        os.makedirs(os.path.dirname(location), exist_ok=True)
        return JournalStorage(JournalFileBackend(location))
    except Exception as exc:  # a driver package missing, a server that does not answer, a read-only folder
        raise ConfigError("optuna-storage", f"cannot open {location}: {one_line(exc, 300)}") from None


def optuna_storage(spec: SweepSpec, out: str) -> Any:
    """The opened Optuna storage of the sweep in ``out`` (None for an in-memory study); see study_location."""
    location = study_location(spec, out)
    return None if location is None else open_storage(location)


def dashboard_line(spec: SweepSpec, out: str) -> str:
    """The line a sweep prints at its start: the command that opens its study in optuna-dashboard."""
    location = study_location(spec, out)
    if location is None:
        return (
            f"sweep {spec.name}: its Optuna study is kept in memory (results on an object store); pass "
            "--optuna-storage postgresql://... to watch it live in optuna-dashboard"
        )
    return f"sweep {spec.name}: watch it live: optuna-dashboard {shlex.quote(location)}  (study {spec.name!r})"


def make_searcher(spec: SweepSpec, out: Optional[str] = None) -> Any:
    """Optuna over the objectives (metric/mode lists for two; trials stopped early told as pruned), each
    recipe expanded over the methods and seeds of a ``compare:``/``seeds:`` sweep, at most ``max_concurrent``
    trials at once. With ``out`` the study is kept in :func:`optuna_storage`, named after the sweep."""
    from colt_ray.parallel.sweep.compare import trial_variants
    from colt_ray.parallel.sweep.searchers import Limiter, OptunaPruning, Replicates

    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    storage = optuna_storage(spec, out) if out is not None else None
    search = OptunaPruning(
        metric=metrics if spec.multi else metrics[0],
        mode=modes if spec.multi else modes[0],
        sampler=make_sampler(spec),
        storage=storage,
        study_name=spec.name if storage is not None else None,
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
    )
    if spec.replicated:
        search = Replicates(search, trial_variants(spec), metrics)
    return Limiter(search, max_concurrent=spec.budget.max_concurrent)


def make_scheduler(spec: SweepSpec) -> Any:
    """ASHA on its one metric along ``time_attr`` (cycles, or percent sparsity when trials prune at
    different rates), or None (every trial runs to its end)."""
    if spec.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = spec.scheduler
    return ASHAScheduler(
        time_attr=s.time_attr,
        metric=s.metric,
        mode=s.mode,
        max_t=s.max_t,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )


def make_trainable(spec: SweepSpec, out: str, keep_gpus: bool, data: Optional[dict] = None) -> Any:
    """``train_trial`` bound to the sweep, reserving its placement-group bundles per trial (see ``bundles``);
    ``keep_gpus``: the sweep's GPU policy (``driver.check_cluster``) kept the GPU shares; ``data``: the sweep's
    datasets in the object store (``datasets.put_datasets``), references that reach every trial in the one
    object ``with_parameters`` puts."""
    from ray import tune

    fn = tune.with_parameters(
        train_trial, out=out, sweep=spec.name, target=objective_target(spec), keep_gpus=keep_gpus, data=data
    )
    return tune.with_resources(fn, TrialResources(keep_gpus))


def trial_dirname(trial: Any) -> str:
    """``trial_<id>``: short trial directories (Tune's default names carry every parameter)."""
    return f"trial_{trial.trial_id}"


def build_tuner(
    spec: SweepSpec, out: str, keep_gpus: bool = True, verbose: int = 1, data: Optional[dict] = None
) -> Any:
    """A new ``Tuner`` for ``spec`` writing results under ``out`` (the sweep directory); ``data``: the sweep's
    datasets in the object store."""
    from ray import tune

    from colt_ray.parallel.sweep.live import LiveTable
    from colt_ray.parallel.sweep.trackers import make_callbacks

    tune_config = tune.TuneConfig(
        search_alg=make_searcher(spec, out),
        scheduler=make_scheduler(spec),
        num_samples=spec.trial_count,  # every recipe once per (seed, compared method)
        trial_name_creator=trial_dirname,
        trial_dirname_creator=trial_dirname,
        # a finished trial's worker process runs the next trial with the same resources: no new process and
        # no second torch import per trial (about 3.5 s of idle core per trial on a small machine)
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=TUNE_DIR,
        storage_path=out,
        verbose=verbose,
        failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
        # No Tune checkpoints: each trial keeps its resume state in its own file (trainable.TrialSink). With
        # CheckpointConfig(num_to_keep=n), Tune forces an experiment snapshot (the whole experiment_state
        # JSON, every trial's, and the searcher's state) whenever a trial has checkpointed n times since the
        # last one (execution/experiment_state.py, _ExperimentCheckpointManager.on_trial_checkpoint), so that
        # the snapshot never names a checkpoint already deleted: every cycle with n=1, O(trials^2 x cycles)
        # bytes over a sweep. Without trial checkpoints Tune snapshots on its own period
        # (TuneController.step -> checkpoint(); TUNE_GLOBAL_CHECKPOINT_S, "auto" by default: every
        # max(10 s, 19 x the time a snapshot takes), at most ~5% of the driver's time) and at the end.
        checkpoint_config=tune.CheckpointConfig(),
        progress_reporter=progress_table(spec),
        # trials.parquet and sweep_status.json while the sweep runs; the trackers the space names
        callbacks=[LiveTable(spec, out), *make_callbacks(spec.callbacks, out, spec.name, layout.is_uri(out))],
    )
    return tune.Tuner(
        make_trainable(spec, out, keep_gpus, data),
        param_space=param_space(spec),
        tune_config=tune_config,
        run_config=run_config,
    )


def progress_table(spec: SweepSpec) -> Any:
    """Tune's status table for the sweep: a column per objective (and the cycle and sparsity a trial has
    reached), the searched settings, trials sorted by the first objective. Tune's newer output engine ignores
    a ``progress_reporter``; ``run_sweep`` selects the one that reads it (``RAY_AIR_NEW_OUTPUT=0``)."""
    from ray.tune import CLIReporter

    first = spec.objectives[0]
    columns = dict.fromkeys([*(o.metric for o in spec.objectives), "cycle", "sparsity"])
    return CLIReporter(
        metric_columns={m: m for m in columns},
        parameter_columns=list(spec.search),
        metric=first.metric,
        mode=first.mode,
        sort_by_metric=True,
        max_report_frequency=30,
        # else read from Tune's global verbosity when the reporter is made, i.e. off after a --quiet sweep
        print_intermediate_tables=True,
    )


def can_restore(out: str) -> bool:
    """True when ``out`` holds a Tune experiment that ``--resume`` can continue."""
    from ray.tune import Tuner

    try:
        return Tuner.can_restore(tune_path(out))
    except Exception:  # an unreachable or malformed location cannot be restored
        return False


def restore_tuner(
    spec: SweepSpec, out: str, keep_gpus: bool = True, data: Optional[dict] = None, restart_errored: bool = False
) -> Any:
    """The interrupted sweep in ``out``: unfinished trials continue from their checkpoints (with the datasets
    this session put, ``data``), errored ones too, or with ``restart_errored`` start over (Tune's
    ``restart_errored``; ``driver.drop_errored_runs`` removed their files first)."""
    from ray.tune import Tuner

    trainable = make_trainable(spec, out, keep_gpus, data)
    return Tuner.restore(
        tune_path(out),
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=not restart_errored,
        restart_errored=restart_errored,
    )
