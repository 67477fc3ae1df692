"""Typed, frozen configuration: one dataclass per concern, one flat dict for Tune and Parquet.

Every setting is a dataclass field declared with ``setting(...)``: its default, its help text and its
allowed values live with the field, and everything else is generated from them: the ``colt-ray ticket``
flags and ``--help`` (``colt_ray.cli``), the sweep YAML keys and their checks, the Parquet columns of the
``runs`` table and the validation messages. A setting has one name everywhere: ``prune_rate`` is the
field, the YAML key and the column; ``--prune-rate`` is its flag.

``to_flat``/``from_flat`` map a ``RunConfig`` to and from a flat ``{field: value}`` dict (the shape of a Tune
trial config and of a ``runs`` row), and ``run_id`` hashes the fields that differ from their defaults, so
adding a field with a "no change" default keeps every old run id valid (open_lth's scheme). Pure Python:
torch is imported only when a setting's allowed names come from a registry (methods, activations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from colt_ray.core.errors import ConfigError
from colt_ray.core.settings import (  # noqa: F401  (eval_every, flag_name: part of this module's interface)
    Setting,
    eval_every,
    eval_policy_error,
    flag_name,
    registry_names,
    setting,
)
from colt_ray.core.tweaks.registry import TWEAKS  # pure Python: the tweak names and their former names

PRUNE_GROUPS = ("conv", "linear", "output", "batchnorm")
# settings whose None means "the method's default": the runs table records the value used (recorded_flat)
RESOLVED = ("prune_rate", "vote", "cycles")
DISTILL_REDUCTIONS = ("mean", "batchmean")
BACKENDS = ("auto", "local", "ray", "batched")
DEVICES = ("auto", "cpu", "cuda")
REWIND_SCHEDULES = ("continue", "restart")  # IMP late rewinding: docs/algorithms.md, "IMP"
SHARD_STEPS = ("epochs", "match")  # COLT shard training length: docs/algorithms.md, "COLT variants"
DEFAULT_CYCLES = 5
DEFAULT_WARMUP = 1.0  # epochs; RecipeConfig.warmup says when it is left out
TWEAK_LABEL_SMOOTHING = 0.1  # default alpha of the label-smoothing tweak (tweak_label_smoothing)
JACKPOT_SPARSITY = 0.9  # jackpot target when target_sparsity is not given


# ---- the sections ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """Which data, where it lives, and how the training set is split off for validation."""

    dataset: str = setting("digits", "dataset", choices=registry_names("colt_ray.core.data:DATASETS"))
    data_root: Optional[str] = setting(None, "dataset directory (an .npz file for npz)", metavar="DIR")
    val_fraction: float = setting(
        0.0, "fraction of the training set held out for validation (stratified)", lo=0.0, hi=1.0, hi_open=True
    )
    augment: bool = setting(True, "the dataset's standard augmentation (crop/flip for CIFAR-like data)")
    download: bool = setting(False, "download the dataset first (cifar/mnist; needs internet)")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = setting(
        "conv2", "architecture (see `colt-ray ticket --list`)", choices=registry_names("colt_ray.core.models:MODELS")
    )
    init: str = setting(
        "pytorch",
        "weight initialisation of every Linear and Conv2d: pytorch (the layers' defaults, as the COLT code), "
        "kaiming_normal (open_lth's), kaiming_uniform, orthogonal, binary",
        choices=registry_names("colt_ray.core.models.init:INITS"),
    )


@dataclass(frozen=True)
class RecipeConfig:
    """One training: optimizer, schedule and loss. Used for shard training and ticket evaluation alike."""

    epochs: int = setting(10, "epochs per training", lo=0)
    batch_size: int = setting(64, "minibatch size", lo=1)
    optimizer: str = setting("sgd", "optimizer", choices=registry_names("colt_ray.core.optim:OPTIMIZERS", light=True))
    lr: float = setting(0.05, "peak learning rate", lo=0.0, lo_open=True)
    momentum: float = setting(0.9, "SGD momentum", lo=0.0, hi=1.0, hi_open=True)
    weight_decay: float = setting(5e-4, "L2 weight decay", lo=0.0)
    warmup_epochs: float = setting(
        DEFAULT_WARMUP,
        "linear warm-up from ~0 to lr over this many epochs (must be below --epochs; "
        "the default is left out of a training of 1 epoch or less, which it would fill)",
        lo=0.0,
    )
    schedule: str = setting(
        "cosine", "lr schedule after warm-up", choices=registry_names("colt_ray.core.schedules:SCHEDULES", light=True)
    )
    milestones: tuple[int, ...] = setting((), "epochs for step (first = step size) / multistep, e.g. 20,30,45", lo=0)
    gamma: float = setting(0.2, "lr factor at each step/multistep milestone", lo=0.0, lo_open=True)
    label_smoothing: float = setting(0.0, "alpha: true class 1-alpha, others alpha/(C-1)", lo=0.0, hi=1.0, hi_open=True)
    amp: bool = setting(
        False,
        "mixed precision: every training's forward pass under bfloat16 autocast, loss and weights float32 "
        "(needs --device cuda; evaluation stays float32). A recipe setting, in the run id: bfloat16's 8-bit "
        "mantissa changes which weights are pruned",
    )

    @property
    def warmup(self) -> float:
        """The warm-up the training uses: ``warmup_epochs``, except that the default is left out (0) of a
        training it would fill (``epochs`` <= the default), where the lr would never reach ``lr``
        (``warmup_note`` says so in one line; a warm-up given explicitly that fills the training is refused)."""
        if self.warmup_epochs == DEFAULT_WARMUP and self.epochs <= DEFAULT_WARMUP:
            return 0.0
        return self.warmup_epochs

    def warmup_note(self) -> Optional[str]:
        """One line for the user when ``warmup`` leaves the default warm-up out, else None."""
        if self.warmup == self.warmup_epochs or self.epochs == 0:
            return None
        return (
            f"warmup-epochs: the default {DEFAULT_WARMUP:g}-epoch warm-up would fill the whole {self.epochs}-epoch "
            "training (the learning rate would never reach --lr); this training has no warm-up "
            "(--warmup-epochs below --epochs sets one)"
        )


@dataclass(frozen=True)
class PruneConfig:
    """Score x budget x selection. ``prune_rate`` None means the method's default (COLT 0.15, IMP 0.20)."""

    prune_rate: Optional[float] = setting(
        None,
        "fraction of surviving weights pruned per round",
        lo=0.0,
        hi=1.0,
        lo_open=True,
        hi_open=True,
        default_text="COLT 0.15, IMP 0.20",
        hash_key="rate",
    )
    budget: str = setting(
        "global", "pruning budget", choices=registry_names("colt_ray.core.pruning.budgets:BUDGETS", light=True)
    )
    prune_groups: tuple[str, ...] = setting(
        ("conv", "linear"), "tensor groups to prune", choices=PRUNE_GROUPS, hash_key="groups"
    )


@dataclass(frozen=True)
class TicketConfig:
    """The ticket method and its loop. Stops at ``target_sparsity`` or after ``cycles`` rounds."""

    method: str = setting("colt", "ticket method", choices=registry_names("colt_ray.core.tickets.specs:METHODS"))
    shards: int = setting(2, "COLT: number of shards k", lo=1)
    split: str = setting("class", "COLT shard split", choices=registry_names("colt_ray.core.data.shards:SPLITS"))
    shard_overlap: float = setting(
        0.0,
        "COLT: fraction of the training set each shard holds, up to 1; at or below 1/k the shards are disjoint "
        "(the paper); above, each shard also holds a seeded share of the other shards' examples "
        "(docs/algorithms.md, COLT variants)",
        lo=0.0,
        hi=1.0,
        metavar="F",
    )
    shard_steps: str = setting(
        "epochs",
        "COLT: epochs (each shard trains --epochs passes over its shard, the paper) or match (as many optimizer "
        "steps as a full-data training of the recipe, its lr schedule stretched to them)",
        choices=SHARD_STEPS,
    )
    vote: Optional[int] = setting(
        None, "COLT: keep a weight kept by >= V shards", lo=1, default_text="all k, the AND", metavar="V"
    )
    cycles: Optional[int] = setting(
        None, "number of prune rounds", lo=1, default_text=f"{DEFAULT_CYCLES} without --target-sparsity"
    )
    target_sparsity: Optional[float] = setting(
        None,
        "stop once sparsity reaches this (jackpot: its sparsity)",
        lo=0.0,
        hi=1.0,
        lo_open=True,
        hi_open=True,
        default_text=f"none; jackpot {JACKPOT_SPARSITY}",
    )
    rewind_step: int = setting(
        0,
        "IMP/COLT: rewind to the weights after K steps (0 = init; COLT: K steps of full-data pre-training)",
        lo=0,
        metavar="K",
    )
    rewind_schedule: str = setting(
        "continue",
        "IMP/COLT with --rewind-step K: continue (open_lth's: every level trains steps K..T, the lr schedule and "
        "the data order carried on from step K) or restart (every level trains all T steps from theta_K, "
        "schedule and data order from step 0: colt_ray's behaviour before this setting existed)",
        choices=REWIND_SCHEDULES,
    )
    eval_tickets: str = setting(
        "all",
        "COLT: which cycles' tickets are trained on the full data: all, final, none "
        "or every:N (the last ticket is evaluated under every policy but none)",
        check=eval_policy_error,
        aliases=("--no-eval-tickets",),
        metavar="POLICY",
    )
    max_acc_drop: Optional[float] = setting(
        None,
        "stop once an evaluated ticket is more than D below the dense "
        "ticket's accuracy (validation when there is a split, else test)",
        lo=0.0,
        hi=1.0,
        default_text="no limit",
        metavar="D",
    )
    seed: int = setting(42, "run seed (init, heads, shards, shuffling)", lo=0)


@dataclass(frozen=True)
class ResourcesConfig:
    """How a run is executed. Not part of the run id: it never changes which ticket is found."""

    backend: str = setting(
        "auto",
        "auto (ray for COLT with k >= 2 shards, else local), ray (actors train "
        "shards and evaluate tickets concurrently), local (one process) or batched (one process, COLT's k "
        "shard models stacked and trained together: docs/batched.md)",
        choices=BACKENDS,
    )
    address: Optional[str] = setting(None, "Ray cluster to join", default_text="$RAY_ADDRESS, else a local Ray")
    cpus_per_shard: float = setting(1.0, "CPUs reserved per shard actor", lo=0.0, lo_open=True)
    gpus_per_shard: float = setting(0.0, "GPU share per shard actor (e.g. 0.25)", lo=0.0)
    allow_cpu_fallback: Optional[bool] = setting(
        None,
        "ray: when --gpus-per-shard asks for GPUs and the Ray cluster has none, train on the CPU (one line says "
        "so); without it the run waits up to --start-timeout for an autoscaler node type with GPUs, or stops "
        "with an error when the cluster declares none",
        default_text="yes on a local Ray this command starts, no on a cluster it joins",
    )
    gpu_memory_cap: bool = setting(
        False,
        "ray: an actor holding a fraction (< 1) of a GPU may use only that fraction of the GPU's memory "
        "(torch.cuda.set_per_process_memory_fraction), so actors sharing a GPU cannot starve each other; one "
        "that needs more fails with CUDA out of memory",
    )
    shards_per_actor: int = setting(
        1,
        "ray: shard models trained together (stacked, docs/batched.md) by one actor, which reserves that many "
        "shards' CPU and GPU shares",
        lo=1,
        metavar="M",
    )
    threads: int = setting(1, "torch threads per training (the same on every backend: bitwise-equal results)", lo=1)
    start_timeout: float = setting(
        120.0,
        "ray: seconds to wait for the cluster to place the run's trainer actors (all at once, one placement "
        "group), and for the autoscaler to add GPUs to a cluster without any, before giving up with an error "
        "naming what does not fit",
        lo=0.0,
        lo_open=True,
        metavar="S",
    )
    device: str = setting("auto", "training device", choices=DEVICES)
    progress: bool = setting(True, "progress bars")


@dataclass(frozen=True)
class TweaksConfig:
    """Retraining tweaks for sparse tickets (docs/algorithms.md section 3); every default is "no change".

    ``tweaks`` switches on any of the ``TWEAKS`` of ``core/tweaks/registry.py``, comma-separated ("" = none;
    a string, so that a sweep can search over combinations as choices); ``activation`` replaces every ReLU.
    The label-smoothing tweak retrains with alpha ``tweak_label_smoothing`` (the recipe's ``label_smoothing``
    is every training's own, the mask search's too, tweak or not: one meaning per setting). Distillation
    retrains a sparse full-data ticket on the run's plain dense model:
    ``distill_weight * T^2 * KL + (1 - distill_weight) * CE``.
    """

    tweaks: str = setting(
        "",
        "comma-separated retraining tweaks (label-smoothing: retrain with alpha "
        "--tweak-label-smoothing; distill: sparse full-data retraining against the run's dense model)",
        choices=registry_names("colt_ray.core.tweaks.registry:TWEAKS", light=True),
        separator=",",
        metavar="LIST",
    )
    activation: str = setting(
        "relu",
        "replace every ReLU by this activation",
        choices=registry_names("colt_ray.core.tweaks.activations:FACTORIES"),
    )
    distill_temperature: float = setting(5.0, "distill: softmax temperature T", lo=0.0, lo_open=True)
    distill_weight: float = setting(0.9, "distill: weight of T^2 * KL; cross-entropy gets 1 - this", lo=0.0, hi=1.0)
    distill_reduction: str = setting(
        "mean",
        "distill: how the KL term is averaged: mean (over batch and classes, the reference's "
        "nn.KLDivLoss default) or batchmean (over the batch only: C times heavier)",
        choices=DISTILL_REDUCTIONS,
    )
    tweak_label_smoothing: float = setting(
        TWEAK_LABEL_SMOOTHING,
        "label-smoothing tweak: the alpha tickets are retrained with (the mask search keeps --label-smoothing)",
        lo=0.0,
        lo_open=True,
        hi=1.0,
        hi_open=True,
    )

    @property
    def names(self) -> tuple[str, ...]:
        """The switched-on tweaks, in the order given (former names read as today's)."""
        formers = _tweak_formers()
        return tuple(formers.get(t.strip(), t.strip()) for t in self.tweaks.split(",") if t.strip())

    @property
    def active(self) -> bool:
        """Whether any retraining tweak is on (a tweak, or an activation other than ReLU)."""
        return bool(self.names) or self.activation != "relu"


@dataclass(frozen=True)
class JackpotConfig:
    """Lottery jackpots (docs/algorithms.md section 4): masks searched with scores on frozen pre-trained weights.

    Plain (non-Optional) types: the ``runs`` table keeps its set of nullable columns.
    """

    pretrained: str = setting(
        "",
        "pre-trained weights: a safetensors state dict or a colt_ray ticket file (its theta)",
        default_text="none: train the dense model first",
        metavar="FILE",
    )
    pretrain_epochs: int = setting(-1, "dense training before the search; -1: --epochs, or 0 with --pretrained", lo=-1)
    search_epochs: int = setting(10, "epochs of score training", lo=0)
    score_lr: float = setting(0.1, "SGD learning rate of the scores (cosine decay)", lo=0.0, lo_open=True)
    score_weight_decay: float = setting(5e-4, "weight decay on the scores", lo=0.0)
    short_restriction: bool = setting(
        False,
        "the reference code's matched-swap mask update (lottery-jackpots utils/conv_type.py final_pop_up): a "
        "layer's mask moves to its top-scoring weights only when as many pruned weights rise above the "
        "threshold as kept ones fall to it, else it stays; off: the top-scoring weights after every step",
    )
    first_order_swaps: bool = setting(
        False,
        "colt_ray's own variant, not in the reference: accept a mask change only as matched in/out swaps "
        "whose first-order loss estimate (from the scores' gradient) is negative",
    )


SECTIONS = ("data", "model", "recipe", "prune", "ticket", "resources", "retrain", "jackpot")


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
    def method(self) -> Any:
        """The ``MethodSpec`` of ``ticket.method`` (ConfigError listing the valid names if unknown)."""
        from colt_ray.core.tickets.specs import METHODS

        return METHODS.get(self.ticket.method)

    @property
    def prune_rate(self) -> float:
        """The fraction pruned per round: the setting, else the method's default; a method that prunes once
        (a jackpot) goes straight to its target sparsity."""
        spec = self.method
        if spec.default_prune_rate is None:
            return self.jackpot_sparsity
        return self.prune.prune_rate if self.prune.prune_rate is not None else spec.default_prune_rate

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
        return self.ticket.shards if self.method.uses_shards else 1

    @property
    def backend(self) -> str:
        """The backend that runs: ``auto`` is ray for a method that trains k >= 2 shards (they train, and
        tickets are evaluated, concurrently) on a machine with >= 2 CPUs or a cluster address, else local
        (one trainer gains nothing from Ray's start-up cost)."""
        res = self.resources
        if res.backend != "auto":
            return res.backend
        parallel = self.num_shards >= 2 and ((os.cpu_count() or 1) >= 2 or bool(res.address))
        return "ray" if parallel else "local"

    @property
    def retrains_apart(self) -> bool:
        """Whether tickets are retrained with tweaks apart from the mask search (any retraining tweak on)."""
        return self.retrain.active

    def search_config(self) -> RunConfig:
        """The config of the mask search: retraining tweaks off. Tweaks apply only where a ticket is retrained
        (COLT's ticket evaluations, IMP's per-level retraining, transfer), so masks are those of plain
        COLT/IMP (docs/algorithms.md section 3)."""
        return self.replace(retrain=TweaksConfig()) if self.retrains_apart else self

    def resolved(self) -> RunConfig:
        """This config with ``backend`` auto replaced by the backend that runs (what the ``runs`` row says)."""
        return self.replace(resources=dataclasses.replace(self.resources, backend=self.backend))

    def replace(self, **sections: Any) -> RunConfig:
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

    def recorded_flat(self) -> dict[str, Any]:
        """``to_flat()`` with the settings whose default depends on the method resolved to the value the run
        used (what the ``runs`` table stores, so ``groupby('prune_rate')`` keeps default runs): ``prune_rate``
        of an iterative method, ``vote`` of a sharded one, ``cycles`` when no target sparsity bounds the run,
        and ``warmup_epochs`` as trained (``RecipeConfig.warmup``). A setting the method does not read stays
        null. The run id still hashes only the non-default settings (``to_flat``); :meth:`from_recorded` finds
        them again."""
        flat, spec = self.to_flat(), self.method
        flat["warmup_epochs"] = self.recipe.warmup  # 0 where the default warm-up is left out of a short training
        if spec.default_prune_rate is not None:
            flat["prune_rate"] = self.prune_rate
        if spec.uses_shards:
            flat["vote"] = self.vote
        if self.ticket.target_sparsity is None and spec.default_prune_rate is not None:
            flat["cycles"] = self.max_cycles
        return flat

    @classmethod
    def from_recorded(cls, flat: dict[str, Any], run_id: Optional[str] = None) -> RunConfig:
        """The config of a ``runs`` row (``recorded_flat``): each resolved setting is tried at its default
        (None) too, and the combination whose run id is ``run_id`` is returned (the run's own settings, given
        explicitly or left to the method); without a match or a ``run_id``, the settings as recorded."""
        if flat.get("rewind_step") and flat.get("rewind_schedule") is None:
            flat = {**flat, "rewind_schedule": "restart"}  # a row from before the setting: trained as restart does
        cfg = cls.from_flat(flat)
        if run_id is None or cfg.run_id() == run_id:
            return cfg
        resolved = [k for k in RESOLVED if flat.get(k) is not None]
        for n in range(1, len(resolved) + 1):
            for keys in itertools.combinations(resolved, n):
                trial = cls.from_flat({**flat, **dict.fromkeys(keys)})
                if trial.run_id() == run_id:
                    return trial
        return cfg

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> RunConfig:
        """Build from a flat dict (a Tune trial config); unknown keys are a ConfigError naming them. Former
        names of renamed settings (``rate``, ``groups``) and ``eval_tickets`` true/false are still read."""
        owner = flat_field_owners()
        flat = upgrade_flat(flat)
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
        diff = {_hash_key(k): _hash_value(k, v) for k, v in own.items() if k not in skip and v != base[k]}
        # rewind_schedule breaks the "default is absent" rule on purpose: runs with a rewind step made before
        # the setting existed trained as ``restart`` does, so restart keeps their ids and the default
        # (continue) joins the id of every late-rewinding run, where no old id names it; without a rewind
        # step both schedules train alike and share one id
        diff.pop("rewind_schedule", None)
        if own["rewind_step"] and own["rewind_schedule"] == "continue":
            diff["rewind_schedule"] = "continue"
        # a default warm-up left out of a short training (RecipeConfig.warmup) trains as --warmup-epochs 0 does:
        # the same id as that, and never the id such a run had when the warm-up filled its training
        if self.recipe.warmup != self.recipe.warmup_epochs:
            diff[_hash_key("warmup_epochs")] = _hash_value("warmup_epochs", self.recipe.warmup)
        blob = json.dumps(diff, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# former names of renamed settings -> their names now (read from old sweep checkpoints and YAML files)
RENAMED = {"rate": "prune_rate", "groups": "prune_groups"}


def upgrade_flat(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with former setting names and values replaced by today's (``eval_tickets`` was a bool)."""
    out = {RENAMED.get(k, k): v for k, v in flat.items()}
    if isinstance(out.get("eval_tickets"), bool):
        out["eval_tickets"] = "all" if out["eval_tickets"] else "none"
    return out


def _tweak_formers() -> dict[str, str]:
    """Former tweak names -> today's (``core/tweaks/registry.py``): still read, and hashed as before."""
    return TWEAKS.formers()


def _hash_key(name: str) -> str:
    return setting_of(name).hash_key or name


def _hash_value(name: str, value: Any) -> Any:
    if name == "eval_tickets" and value == "none":  # was eval_tickets=False before the policies existed
        return False
    if name == "tweaks":  # a renamed tweak keeps its run ids
        former = {new: old for old, new in _tweak_formers().items()}
        return ",".join(former.get(t.strip(), t.strip()) for t in value.split(","))
    return value


# ---- field lookups -----------------------------------------------------------------------------------
def flat_field_owners() -> dict[str, str]:
    """Map every flat field name to the RunConfig section that owns it."""
    owners: dict[str, str] = {}
    for sec in fields(RunConfig):
        for f in fields(sec.default_factory()):  # type: ignore[misc]
            assert f.name not in owners, f"duplicate config field {f.name}"
            owners[f.name] = sec.name
    return owners


def section_fields(section: str) -> tuple[dataclasses.Field, ...]:
    return fields(getattr(RunConfig(), section))


def _field(name: str) -> dataclasses.Field:
    section = flat_field_owners()[name]
    return next(f for f in section_fields(section) if f.name == name)


def setting_of(name: str) -> Setting:
    """The ``Setting`` (help, range, choices) of flat field ``name``."""
    return _field(name).metadata["setting"]


def default_of(name: str) -> Any:
    return _field(name).default


def value_type(name: str) -> Any:
    """The scalar type of a field: ``Optional[x]`` -> x; ``tuple[x, ...]`` -> tuple."""
    section = flat_field_owners()[name]
    hint = typing.get_type_hints(type(getattr(RunConfig(), section)))[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union:
        return args[0]
    return tuple if typing.get_origin(hint) is tuple else hint


def item_type(name: str) -> Any:
    """The element type of a tuple field (``int`` for ``tuple[int, ...]``)."""
    section = flat_field_owners()[name]
    hint = typing.get_type_hints(type(getattr(RunConfig(), section)))[name]
    return typing.get_args(hint)[0]


def _coerce(section: str, key: str, value: Any) -> Any:
    default = getattr(getattr(RunConfig(), section), key)
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(default, tuple) and isinstance(value, str):  # a searched list setting: "conv,linear"
        kind = item_type(key)
        return tuple(kind(x.strip()) for x in value.split(",") if x.strip())
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# validation lives in its own module; these names are part of this module's interface
from colt_ray.core.validation import check_classes, check_value, validate  # noqa: E402, F401
