"""Typed, frozen configuration: one dataclass per concern, one flat dict for Tune and Parquet.

A ``RunConfig`` holds everything that defines a ticket search. ``to_flat``/``from_flat`` map it to and from
a flat ``{field: value}`` dict (the shape of a Tune trial config and of a ``runs`` Parquet row), and
``run_id`` hashes the fields that differ from their defaults, so adding a field with a "no change" default
keeps every old run id valid (open_lth's scheme). Pure Python: no torch import here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from colt_ray.core.errors import ConfigError

METHODS = ("colt", "imp", "jackpot")
SPLITS = ("class", "random")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "multistep", "cosine")
BUDGETS = ("global", "layerwise")
PRUNE_GROUPS = ("conv", "linear", "output", "batchnorm")
DEFAULT_PRUNE_RATE = {"colt": 0.15, "imp": 0.20}
DEFAULT_CYCLES = 5
ACTIVATIONS = ("relu", "swish", "mish", "gelu", "elu", "softplus")  # relu = the architecture's own (no change)
TWEAKS = ("label-smoothing", "skip-paths", "distill", "rescale-init")  # ALGORITHMS.md section 3
TWEAK_LABEL_SMOOTHING = 0.1  # alpha of the label-smoothing tweak when --label-smoothing is left at 0
JACKPOT_SPARSITY = 0.9  # jackpot target when --target-sparsity is not given


@dataclass(frozen=True)
class DataConfig:
    """Which data, where it lives, and how the training set is split off for validation."""

    dataset: str = "digits"
    data_root: Optional[str] = None
    val_fraction: float = 0.0  # held out of the training set, stratified, before sharding
    augment: bool = True  # the dataset's standard augmentation (crop/flip for CIFAR-like data)
    download: bool = False  # only for datasets that support it; never at test time


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "conv2"


@dataclass(frozen=True)
class RecipeConfig:
    """One training: optimizer, schedule and loss. Used for shard training and ticket evaluation alike."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0  # linear warm-up from ~0 to lr over this many epochs
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()  # epochs, for step (first entry = step size) and multistep
    gamma: float = 0.2
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class PruneConfig:
    """Score x budget x selection. ``rate`` None means the method's default (COLT 0.15, IMP 0.20)."""

    rate: Optional[float] = None
    budget: str = "global"
    groups: tuple[str, ...] = ("conv", "linear")


@dataclass(frozen=True)
class TicketConfig:
    """The ticket method and its loop. Stops at ``target_sparsity`` or after ``cycles`` rounds."""

    method: str = "colt"
    shards: int = 2
    split: str = "class"
    vote: Optional[int] = None  # keep a weight if >= vote shard masks keep it; None = all k (COLT's AND)
    cycles: Optional[int] = None  # None with no target -> DEFAULT_CYCLES
    target_sparsity: Optional[float] = None
    rewind_step: int = 0  # IMP: rewind to the weights after this many training steps (0 = init)
    eval_tickets: bool = True  # COLT: train every cycle's ticket on the full data (step 6)
    seed: int = 42


@dataclass(frozen=True)
class ResourcesConfig:
    """How a run is executed. Not part of the run id: it never changes which ticket is found."""

    backend: str = "local"
    address: Optional[str] = None
    cpus_per_shard: float = 1.0
    gpus_per_shard: float = 0.0
    threads: int = 1  # torch intra-op threads per training; the same on every backend for bitwise equality
    device: str = "auto"  # auto | cpu | cuda
    progress: bool = True


@dataclass(frozen=True)
class TweaksConfig:
    """Retraining tweaks for sparse tickets (ALGORITHMS.md section 3); every default is "no change".

    ``tweaks`` switches on any of ``TWEAKS``, comma-separated ("" = none; a string, so that a sweep can
    search over combinations as choices); ``activation`` replaces every ReLU. Label smoothing uses the
    recipe's ``label_smoothing`` when it is > 0, else ``TWEAK_LABEL_SMOOTHING``. Distillation retrains a sparse
    full-data ticket on the run's dense trained model: ``distill_weight * T^2 * KL + (1 - distill_weight) * CE``.
    """

    tweaks: str = ""
    activation: str = "relu"
    distill_temperature: float = 5.0
    distill_weight: float = 0.9

    @property
    def names(self) -> tuple[str, ...]:
        """The switched-on tweaks, in the order given."""
        return tuple(t.strip() for t in self.tweaks.split(",") if t.strip())


@dataclass(frozen=True)
class JackpotConfig:
    """Lottery jackpots (ALGORITHMS.md section 4): masks searched with scores on frozen pre-trained weights.

    ``pretrained`` is a safetensors file (a plain state dict, or a colt_ray ticket file whose theta is used;
    "" = none: train the dense model first); ``pretrain_epochs`` -1 = 0 with a file, else the recipe's epochs.
    Plain (non-Optional) types: the ``runs`` table keeps its set of nullable columns.
    """

    pretrained: str = ""
    pretrain_epochs: int = -1
    search_epochs: int = 10
    score_lr: float = 0.1
    score_weight_decay: float = 5e-4
    short_restriction: bool = False  # mask changes only in matched in/out swaps that lower the loss


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    ticket: TicketConfig = field(default_factory=TicketConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    retrain: TweaksConfig = field(default_factory=TweaksConfig)
    jackpot: JackpotConfig = field(default_factory=JackpotConfig)

    # ---- derived settings -------------------------------------------------------------------------
    @property
    def prune_rate(self) -> float:
        if self.ticket.method == "jackpot":  # one prune step from dense, straight to the target
            return self.jackpot_sparsity
        return self.prune.rate if self.prune.rate is not None else DEFAULT_PRUNE_RATE[self.ticket.method]

    @property
    def jackpot_sparsity(self) -> float:
        t = self.ticket.target_sparsity
        return t if t is not None else JACKPOT_SPARSITY

    @property
    def max_cycles(self) -> Optional[int]:
        t = self.ticket
        if t.cycles is None and t.target_sparsity is None:
            return DEFAULT_CYCLES
        return t.cycles

    @property
    def vote(self) -> int:
        return self.ticket.vote if self.ticket.vote is not None else self.num_shards

    @property
    def num_shards(self) -> int:
        return self.ticket.shards if self.ticket.method == "colt" else 1

    def replace(self, **sections: Any) -> "RunConfig":
        return dataclasses.replace(self, **sections)

    # ---- flat form --------------------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """``{field: value}`` over every section; tuples become lists (JSON/Parquet friendly)."""
        out: dict[str, Any] = {}
        for sec in fields(self):
            for f in fields(getattr(self, sec.name)):
                v = getattr(getattr(self, sec.name), f.name)
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "RunConfig":
        """Build from a flat dict (a Tune trial config); unknown keys are a ConfigError naming them."""
        owner = flat_field_owners()
        unknown = sorted(set(flat) - set(owner))
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting; valid: {', '.join(sorted(owner))}")
        per_section: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            sec = owner[key]
            per_section.setdefault(sec, {})[key] = _coerce(sec, key, value)
        default = cls()
        return cls(**{s: dataclasses.replace(getattr(default, s), **kw) for s, kw in per_section.items()})

    def run_id(self) -> str:
        """12 hex chars hashing the non-default, result-relevant fields (resources excluded)."""
        base = RunConfig().to_flat()
        own = self.to_flat()
        skip = {f.name for f in fields(ResourcesConfig)}
        diff = {k: v for k, v in own.items() if k not in skip and v != base[k]}
        blob = json.dumps(diff, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def flat_field_owners() -> dict[str, str]:
    """Map every flat field name to the RunConfig section that owns it."""
    owners: dict[str, str] = {}
    for sec in fields(RunConfig):
        for f in fields(sec.default_factory()):  # type: ignore[misc]
            assert f.name not in owners, f"duplicate config field {f.name}"
            owners[f.name] = sec.name
    return owners


def _coerce(section: str, key: str, value: Any) -> Any:
    default = getattr(getattr(RunConfig(), section), key)
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def validate(cfg: RunConfig, num_classes: Optional[int] = None) -> None:
    """Check every setting that can be checked without loading data; raise ConfigError on the first bad one.

    ``num_classes`` (when known) also checks that a class split can serve the shard count.
    """
    t, p, r, d = cfg.ticket, cfg.prune, cfg.recipe, cfg.data
    _choice("method", t.method, METHODS)
    _choice("split", t.split, SPLITS)
    _choice("optimizer", r.optimizer, OPTIMIZERS)
    _choice("schedule", r.schedule, SCHEDULES)
    _choice("budget", p.budget, BUDGETS)
    for g in p.groups:
        _choice("prune-groups", g, PRUNE_GROUPS)
    if not p.groups:
        raise ConfigError("prune-groups", f"must name at least one of {', '.join(PRUNE_GROUPS)}")
    if p.rate is not None and not 0.0 < p.rate < 1.0:
        raise ConfigError("prune-rate", f"must be in (0, 1), got {p.rate}")
    if t.shards < 1:
        raise ConfigError("shards", f"must be >= 1, got {t.shards}")
    if t.cycles is not None and t.cycles < 1:
        raise ConfigError("cycles", f"must be >= 1, got {t.cycles}")
    if t.target_sparsity is not None and not 0.0 < t.target_sparsity < 1.0:
        raise ConfigError("target-sparsity", f"must be in (0, 1), got {t.target_sparsity}")
    if t.vote is not None and not 1 <= t.vote <= cfg.num_shards:
        raise ConfigError("vote", f"must be in [1, shards={cfg.num_shards}], got {t.vote}")
    if t.rewind_step < 0:
        raise ConfigError("rewind-step", f"must be >= 0, got {t.rewind_step}")
    if t.rewind_step and t.method != "imp":
        raise ConfigError("rewind-step", "is an IMP setting; COLT rewinds to the initialisation")
    if t.method == "colt" and t.split == "class" and "output" in p.groups and t.shards > 1:
        raise ConfigError("prune-groups", "'output' cannot be pruned under a class split: shard heads differ")
    if num_classes is not None and t.method == "colt" and t.split == "class" and t.shards > num_classes:
        raise ConfigError("shards", f"a class split of {num_classes} classes allows at most {num_classes} shards, got {t.shards}")
    _positive("epochs", r.epochs, allow_zero=True)
    _positive("batch-size", r.batch_size)
    _positive("lr", r.lr)
    if r.weight_decay < 0:
        raise ConfigError("weight-decay", f"must be >= 0, got {r.weight_decay}")
    if not 0.0 <= r.momentum < 1.0:
        raise ConfigError("momentum", f"must be in [0, 1), got {r.momentum}")
    if r.warmup_epochs < 0:
        raise ConfigError("warmup-epochs", f"must be >= 0, got {r.warmup_epochs}")
    if not 0.0 <= r.label_smoothing < 1.0:
        raise ConfigError("label-smoothing", f"must be in [0, 1), got {r.label_smoothing}")
    if r.schedule in ("step", "multistep") and not r.milestones:
        raise ConfigError("milestones", f"schedule {r.schedule!r} needs at least one milestone epoch")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError("val-fraction", f"must be in [0, 1), got {d.val_fraction}")
    _validate_tweaks(cfg)
    _validate_jackpot(cfg)
    _validate_resources(cfg.resources)


def _validate_tweaks(cfg: RunConfig) -> None:
    tw = cfg.retrain
    _choice("activation", tw.activation, ACTIVATIONS)
    for name in tw.names:
        _choice("tweaks", name, TWEAKS)
    if tw.distill_temperature <= 0:
        raise ConfigError("distill-temperature", f"must be > 0, got {tw.distill_temperature}")
    if not 0.0 <= tw.distill_weight <= 1.0:
        raise ConfigError("distill-weight", f"must be in [0, 1], got {tw.distill_weight}")
    if "distill" in tw.names and cfg.ticket.method == "jackpot":
        raise ConfigError("tweaks", "distill retrains weights; a jackpot trains none (valid with colt, imp)")


def _validate_jackpot(cfg: RunConfig) -> None:
    j, t = cfg.jackpot, cfg.ticket
    if t.method != "jackpot":
        changed = [f.name for f in fields(j) if getattr(j, f.name) != f.default]
        if changed:
            raise ConfigError(changed[0].replace("_", "-"), "is a jackpot setting; use it with --method jackpot")
        return
    if cfg.prune.rate is not None:
        raise ConfigError("prune-rate", "jackpot prunes once, to --target-sparsity (default 0.9); drop --prune-rate")
    if j.pretrain_epochs < -1:
        raise ConfigError("pretrain-epochs", f"must be >= 0 (or -1: the recipe's epochs, 0 with --pretrained), got {j.pretrain_epochs}")
    if j.search_epochs < 0:
        raise ConfigError("search-epochs", f"must be >= 0, got {j.search_epochs}")
    _positive("score-lr", j.score_lr)
    if j.score_weight_decay < 0:
        raise ConfigError("score-weight-decay", f"must be >= 0, got {j.score_weight_decay}")


def _validate_resources(res: ResourcesConfig) -> None:
    _choice("backend", res.backend, ("local", "ray"))
    _choice("device", res.device, ("auto", "cpu", "cuda"))
    if res.backend == "ray" and res.device == "cuda" and res.gpus_per_shard <= 0:
        # Ray hides every GPU from an actor that reserved none, so cuda would fail inside the actors
        raise ConfigError("gpus-per-shard", "--device cuda on the ray backend needs a GPU share per shard, e.g. --gpus-per-shard 0.25")
    if res.cpus_per_shard <= 0:
        raise ConfigError("cpus-per-shard", f"must be > 0, got {res.cpus_per_shard}")
    if res.gpus_per_shard < 0:
        raise ConfigError("gpus-per-shard", f"must be >= 0, got {res.gpus_per_shard}")
    if res.threads < 1:
        raise ConfigError("threads", f"must be >= 1, got {res.threads}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"unknown {value!r}; valid: {', '.join(allowed)}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(name, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")
