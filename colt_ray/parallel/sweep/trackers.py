"""Experiment trackers a space names (``callbacks: [mlflow, tensorboard, wandb]``), as Tune's logger callbacks.

Each tracker is an optional extra (``pip install 'colt_ray[track]'``). :func:`parse_callbacks` reads the
``callbacks:`` key (pure Python); :func:`check_trackers` runs in the driver before Ray starts (the package
imports, the MLflow store opens, W&B has a key or runs offline), each problem a one-line ConfigError;
:func:`make_callbacks` builds Tune's callbacks (imports Ray). Every tracker gets each trial's settings as its
parameters and the metrics of each cycle, with the non-finite ones left out: a ``*_at_target`` cost is
infinite until a ticket reaches the target, for the searcher, and a tracker has no use for it (TensorBoard
warns for each, MLflow stores it as a huge number).
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from typing import Any, Optional

from colt_ray.core.errors import ConfigError, one_line

EXTRA = "pip install 'colt_ray[track]'"
WANDB_MODES = ("online", "offline", "disabled")
# tracker -> (the module its Tune callback imports, its options)
TRACKERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlflow": ("mlflow", ("tracking_uri", "experiment_name", "tags")),
    "tensorboard": ("tensorboardX", ()),  # Tune's TBXLoggerCallback writes with tensorboardX
    "wandb": ("wandb", ("project", "group", "entity", "mode")),
}
MLFLOW_DB = "mlflow.db"  # the default MLflow store of a sweep on a local disk: <sweep dir>/mlflow.db


@dataclass(frozen=True)
class TrackerSpec:
    name: str  # one of TRACKERS
    options: tuple = ()  # (option, value) pairs as the space gave them

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def parse_callbacks(raw: Any) -> tuple[TrackerSpec, ...]:
    """``callbacks:``: a list of tracker names or one-key mappings ``{name: {option: value}}`` (or one mapping
    of name -> options); each tracker at most once, each option checked."""
    if raw is None:
        return ()
    if isinstance(raw, dict):
        raw = [{k: v} for k, v in raw.items()]
    if not isinstance(raw, list):
        raise ConfigError("callbacks", f"must be a list of trackers, e.g. [mlflow, tensorboard]; valid: {_names()}")
    out: list[TrackerSpec] = []
    for item in raw:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            options = {} if options is None else options
        else:
            raise ConfigError("callbacks", f"each entry is a tracker name or {{name: {{option: value}}}}, got {item!r}")
        if name not in TRACKERS:
            raise ConfigError("callbacks", f"unknown tracker {name!r}; valid: {_names()}")
        where = f"callbacks.{name}"
        if any(t.name == name for t in out):
            raise ConfigError(where, "is named twice")
        if not isinstance(options, dict):
            raise ConfigError(where, f"options must be a mapping, got {options!r}")
        valid = TRACKERS[name][1]
        for key, value in options.items():
            if key not in valid:
                raise ConfigError(f"{where}.{key}", f"unknown option; valid: {', '.join(valid) or 'none'}")
            _check_option(f"{where}.{key}", key, value)
        out.append(TrackerSpec(name, tuple(options.items())))
    return tuple(out)


def _names() -> str:
    return ", ".join(TRACKERS)


def _check_option(where: str, key: str, value: Any) -> None:
    if key == "tags":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(where, f"must be a mapping of tag -> value, got {value!r}")
        return
    if key == "mode":
        if value not in WANDB_MODES:
            raise ConfigError(where, f"unknown {value!r}; valid: {', '.join(WANDB_MODES)}")
        return
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"must be a non-empty string, got {value!r}")


# ---- before Ray starts --------------------------------------------------------------------------------
def check_trackers(trackers: tuple[TrackerSpec, ...], out: str, sweep: str, remote: bool) -> None:
    """Every tracker of the sweep in ``out`` can work, else a one-line ConfigError: its package imports (a
    missing one names the extra), MLflow's store opens, W&B has an API key or runs offline, and a tracker that
    writes files next to the trials (tensorboard, W&B offline) is not used on an object store (``remote``),
    whose trial folders are not on this disk."""
    for t in trackers:
        where = f"callbacks.{t.name}"
        module = TRACKERS[t.name][0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(where, f"needs the {module} package ({one_line(exc, 120)}): {EXTRA}") from None
        if t.name == "mlflow":
            uri = mlflow_uri(t, out, remote)
            if uri != default_mlflow_uri(out):  # the default is made in the sweep directory, checked writable
                _check_mlflow(where, uri)
        elif t.name == "wandb":
            _check_wandb(where, t, remote)
        elif remote:
            raise ConfigError(
                where,
                "writes event files into each trial's folder, which an object-store sweep does not keep on a disk; "
                "use mlflow with a tracking server, or wandb",
            )


def mlflow_uri(t: TrackerSpec, out: str, remote: bool) -> str:
    """MLflow's store: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<sweep dir>/mlflow.db``
    on a local disk (an object-store sweep needs a tracking server)."""
    uri = t.kwargs.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if remote:
        raise ConfigError(
            "callbacks.mlflow.tracking_uri",
            "an object-store sweep has no local folder for MLflow's store: give a tracking server "
            "(http://host:5000) or set MLFLOW_TRACKING_URI",
        )
    return default_mlflow_uri(out)


def default_mlflow_uri(out: str) -> str:
    from colt_ray.results import layout

    return "sqlite:///" + os.path.join(layout.local_path(out), MLFLOW_DB)


def _check_mlflow(where: str, uri: str) -> None:
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no INFO lines as its database is made
    try:
        mlflow.tracking.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # a server that does not answer; MLflow 3 refusing a file store unless opted in
        raise ConfigError(f"{where}.tracking_uri", f"cannot open {uri}: {one_line(exc, 300)}") from None


def wandb_mode(t: TrackerSpec) -> Optional[str]:
    """The W&B mode: the space's ``mode``, else ``WANDB_MODE``, else None (W&B's default: online)."""
    return t.kwargs.get("mode") or os.environ.get("WANDB_MODE") or None


def _check_wandb(where: str, t: TrackerSpec, remote: bool) -> None:
    mode = wandb_mode(t)
    if mode == "offline" and remote:
        raise ConfigError(
            f"{where}.mode",
            "offline runs are written into each trial's folder, which an object-store sweep does not keep on a "
            "disk; use online (wandb login) or a sweep on a local disk",
        )
    if mode in ("offline", "disabled"):
        return
    import wandb

    if os.environ.get("WANDB_API_KEY"):
        return
    try:  # a key from `wandb login` (~/.netrc), not checked over the network
        key = wandb.login(prompt=False, verify=False)
    except Exception:
        key = False
    if not key:
        raise ConfigError(where, "no W&B API key: run `wandb login`, set WANDB_API_KEY, or use mode: offline")


# ---- Tune's callbacks (imports Ray) -------------------------------------------------------------------
def finite(result: dict) -> dict:
    """``result`` without the non-finite numbers (inf, nan), nested dicts included."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out[key] = finite(value)
        elif isinstance(value, float) and not math.isfinite(value):
            continue
        else:
            out[key] = value
    return out


def make_callbacks(trackers: tuple[TrackerSpec, ...], out: str, sweep: str, remote: bool) -> list:
    """Tune's logger callbacks of ``trackers`` for the sweep ``sweep`` in ``out``."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.tune.logger import TBXLoggerCallback

    class FiniteMLflow(MLflowLoggerCallback):
        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, finite(result))

    class FiniteTensorBoard(TBXLoggerCallback):
        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, finite(result))

        def _try_log_hparams(self, trial: Any, result: dict) -> None:  # the hparams at a trial's end
            super()._try_log_hparams(trial, finite(result))

    class FiniteWandb(WandbLoggerCallback):
        def setup(self, *args: Any, **kwargs: Any) -> None:
            if self.kwargs.get("mode") in ("offline", "disabled"):  # Ray's setup asks for a key unless WANDB_MODE
                self.api_key_file = None
                return
            super().setup(*args, **kwargs)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, finite(result))

    made = []
    for t in trackers:
        kw = t.kwargs
        if t.name == "mlflow":
            made.append(
                FiniteMLflow(
                    tracking_uri=mlflow_uri(t, out, remote),
                    experiment_name=kw.get("experiment_name", sweep),
                    tags={"sweep": sweep, **{k: str(v) for k, v in (kw.get("tags") or {}).items()}},
                )
            )
        elif t.name == "tensorboard":
            made.append(FiniteTensorBoard())
        else:
            extra = {k: kw[k] for k in ("entity",) if k in kw}
            mode = wandb_mode(t)
            if mode:
                extra["mode"] = mode
            if not remote:  # runs kept in the sweep directory (Tune would stage them in its session folder)
                extra["dir"] = wandb_dir(out)
                os.makedirs(extra["dir"], exist_ok=True)
            made.append(
                FiniteWandb(
                    project=kw.get("project", sweep),
                    group=kw.get("group", sweep),
                    reinit="finish_previous",  # Ray's reinit=True, in the words W&B now asks for
                    settings={"silent": True},  # no run summary and no notices per trial in the driver's log
                    **extra,
                )
            )
    return made


def wandb_dir(out: str) -> str:
    """W&B's ``dir`` for a sweep on a local disk: ``<sweep dir>`` (runs in ``<sweep dir>/wandb/``)."""
    from colt_ray.results import layout

    return layout.local_path(out)


def tracker_lines(trackers: tuple[TrackerSpec, ...], out: str, sweep: str, remote: bool) -> list[str]:
    """One line per tracker, printed as the sweep starts: where it writes and the command that opens it."""
    import shlex

    lines = []
    for t in trackers:
        if t.name == "mlflow":
            uri = mlflow_uri(t, out, remote)
            ui = f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
            lines.append(f"sweep {sweep}: mlflow: {ui}  (experiment {sweep!r})")
        elif t.name == "tensorboard":
            tune_dir = os.path.join(out, "tune")
            lines.append(f"sweep {sweep}: tensorboard: tensorboard --logdir {shlex.quote(tune_dir)}")
        else:
            mode = wandb_mode(t) or "online"
            where = f"runs in {os.path.join(wandb_dir(out), 'wandb')}" if not remote else "online"
            project = t.kwargs.get("project", sweep)
            lines.append(f"sweep {sweep}: wandb ({mode}): project {project!r}, {where}")
    return lines
