"""One ticket search, backend-agnostic: validate and prepare a run, then drive its method.

``prepare`` does everything that can fail on bad input (config, data, architecture fit) before any work
starts and before anything is written. ``LocalBackend`` runs the trainers one after another in this
process; the Ray backend (``colt_ray.parallel``) offers the same two callables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from colt_ray.core.config import RunConfig, check_classes, validate
from colt_ray.core.data import DatasetBundle, Shard, load_dataset, make_shards, shard_bundle
from colt_ray.core.errors import ConfigError
from colt_ray.core.models import check_fits, layer_weight_count, param_groups, prunable_names
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.io import load_weights
from colt_ray.core.tickets.methods import Backend, Context, Finished, Resume, Sink, State
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.teacher import DistillingTrainer, Teacher, keeps_teacher
from colt_ray.core.tickets.trainer import (
    TicketTrainer,
    TrainOutcome,
    build_theta0,
    continues_after_rewind,
    shard_head_seed,
)
from colt_ray.core.train import step_plan
from colt_ray.core.tweaks import build_run_model, uses


@dataclass
class Prepared:
    """A validated run: its config and id, the full data bundle, the shards and theta_0."""

    cfg: RunConfig
    run_id: str
    bundle: DatasetBundle
    shards: list[Shard]
    ctx: Context

    @property
    def num_classes(self) -> int:
        return self.bundle.num_classes


def prepare(
    cfg: RunConfig, run_id: Optional[str] = None, *, checked: bool = False, bundle: Optional[DatasetBundle] = None
) -> Prepared:
    """Validate ``cfg`` against its data and architecture; build theta_0. Raises ConfigError on bad input.
    ``checked``: ``validate(cfg)`` has already passed (only the checks that need the data remain).
    ``bundle``: the run's data, already loaded by the caller (``load_dataset(cfg.data, cfg.ticket.seed)``, e.g.
    shared by the trials of a sweep), instead of loading them here."""
    if not checked:
        validate(cfg)
    bundle = bundle if bundle is not None else load_dataset(cfg.data, cfg.ticket.seed)
    check_classes(cfg, bundle.num_classes)
    check_fits(cfg.model.arch, bundle.in_shape)
    t = cfg.ticket
    shards = make_shards(bundle, cfg.num_shards, t.split, t.seed, t.shard_overlap) if cfg.method.uses_shards else []
    check_shard_rewind(cfg, bundle, shards)
    # the retraining model first: an unknown activation or skip paths without residual blocks fail before any work
    retrained = build_run_model(cfg, bundle.in_shape, bundle.num_classes)
    search = cfg.search_config()
    model = retrained if search is cfg else build_run_model(search, bundle.in_shape, bundle.num_classes)
    theta0 = build_theta0(cfg, bundle.in_shape, bundle.num_classes)
    if cfg.jackpot.pretrained:
        theta0 = load_weights(cfg.jackpot.pretrained, model, cfg.model.arch)  # the jackpot's cycle 0 starts here
    groups = param_groups(model)
    prunable = {n: groups[n] for n in prunable_names(model, cfg.prune.prune_groups)}
    run_id = run_id or cfg.run_id()
    total = sum(p.numel() for p in retrained.parameters())  # every parameter of the retrained ticket
    ctx = Context(cfg, run_id, theta0, prunable, total, layer_weight_count(retrained))
    return Prepared(cfg, run_id, bundle, shards, ctx)


def check_shard_rewind(cfg: RunConfig, bundle: DatasetBundle, shards: list[Shard]) -> None:
    """COLT with ``rewind_step`` k: ConfigError unless k falls inside the full-data training (its pre-training)
    and, where trainings continue from step k, inside every shard's training (else it trains nothing)."""
    k, recipe = cfg.ticket.rewind_step, cfg.recipe
    if not shards or k == 0:
        return
    full = step_plan(len(bundle.train), recipe)[2]
    match = cfg.ticket.shard_steps == "match"
    shortest = min(step_plan(len(s.train_idx), recipe, len(bundle.train) if match else None)[2] for s in shards)
    limit = min(full, shortest) if continues_after_rewind(cfg) else full
    if k >= limit:
        where = "a shard" if limit < full else "a full-data"
        raise ConfigError("rewind-step", f"must be below the {limit} steps of {where} training, got {k}")


def run_method(prepared: Prepared, backend: Backend, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """Drive the configured method with the backend's callables; returns the last cycle's record."""
    return prepared.cfg.method.run(prepared.ctx, backend, sink, resume)


def make_full_trainer(cfg: RunConfig, bundle: DatasetBundle) -> Any:
    """The full-data trainer of the mask search: IMP's levels, a jackpot's pre-training and search (no
    retraining tweaks: they apply only when a ticket is retrained, ``make_ticket_trainer``)."""
    return cfg.method.wrap_full_trainer(TicketTrainer.for_full(cfg.search_config(), bundle))


def make_ticket_trainer(cfg: RunConfig, bundle: DatasetBundle) -> Any:
    """The trainer that retrains tickets on the full data with the run's tweaks: COLT's ticket evaluations and,
    when a tweak is on, IMP's per-level retraining; with distillation, sparse retrainings learn from the run's
    plain dense model (``teacher.DistillingTrainer``)."""
    trainer: Any = TicketTrainer.for_full(cfg, bundle)
    if uses(cfg, "distill"):
        trainer = DistillingTrainer(trainer)
    return trainer


def make_shard_trainer(cfg: RunConfig, bundle: DatasetBundle, shard: Shard) -> TicketTrainer:
    """The trainer of COLT shard ``shard`` of ``bundle``: its own data view and its own fresh head, no
    retraining tweaks (shard trainings are the mask search)."""
    return shard_trainer(cfg, shard_bundle(bundle, shard), shard.index)


def shard_trainer(cfg: RunConfig, rows: DatasetBundle, index: int) -> TicketTrainer:
    """The trainer of COLT shard ``index`` over ``rows``, that shard's own bundle (``shard_bundle``): what a
    parallel backend builds from the shard's rows alone, without the rest of the data."""
    cfg = cfg.search_config()
    return TicketTrainer(cfg, rows, index, shard_head_seed(cfg, index))


def evaluation(trainer: Any, theta: State, mask: Mask, cycle: int) -> dict:
    """A ticket evaluation (COLT step 6): theta under ``mask`` trained on the full data, nothing pruned."""
    return trainer.run(theta, mask, cycle, False, 0).metrics


class LocalBackend:
    """Every training in this process, one after another (``--backend local``), or the shards stacked into one
    batched model (``--backend batched``); evaluations run at once."""

    def __init__(self, prepared: Prepared):
        cfg = self.cfg = prepared.cfg
        torch.set_num_threads(cfg.resources.threads)
        self.full = make_full_trainer(cfg, prepared.bundle)
        # tickets are retrained by the search's own full-data trainer unless a tweak makes them differ
        self.retrainer = make_ticket_trainer(cfg, prepared.bundle) if cfg.retrains_apart else self.full
        self.shards = [make_shard_trainer(cfg, prepared.bundle, s) for s in prepared.shards]
        self.batched = None
        if cfg.backend == "batched":  # the k shard models stacked into one (docs/batched.md)
            from colt_ray.core.tickets.batched import BatchedShards

            self.batched = BatchedShards.from_prepared(prepared)

    def train_shards(self, theta: State, mask: Mask, cycle: int, stop: Any = None) -> list[TrainOutcome]:
        if self.batched is not None:
            return self.batched.train_shards(theta, mask, cycle)
        return [t.run(theta, mask, cycle, True) for t in self.shards]

    def train_full(self, theta: State, mask: Mask, cycle: int, prune_next: bool, capture_step: int) -> TrainOutcome:
        out = self.full.run(theta, mask, cycle, prune_next, capture_step)
        if isinstance(self.retrainer, DistillingTrainer) and keeps_teacher(self.cfg, cycle, mask):
            self.retrainer.set_teacher(Teacher(self.full.state()))  # IMP's level 0: the teacher, already paid for
        return out

    def evaluate(self, theta: State, mask: Mask, cycle: int) -> Finished:
        return Finished(evaluation(self.retrainer, theta, mask, cycle))

    def pretrain(self, theta: State, steps: int) -> TrainOutcome:
        return self.full.pretrain(theta, steps)

    def callables(self) -> Backend:
        return Backend(self.train_shards, self.train_full, self.evaluate, pretrain=self.pretrain)


def run_local(prepared: Prepared, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    return run_method(prepared, LocalBackend(prepared).callables(), sink, resume)
