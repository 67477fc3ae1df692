"""One ticket search, backend-agnostic: validate and prepare a run, then drive its method.

``prepare`` does everything that can fail on bad input (config, data, architecture fit) before any work
starts and before anything is written. ``LocalBackend`` runs the trainers one after another in this
process; the Ray backend (``colt_ray.parallel``) offers the same two callables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from colt_ray.core.config import RunConfig, validate
from colt_ray.core.data import DatasetBundle, Shard, load_dataset, make_shards, shard_bundle
from colt_ray.core.models import check_fits, param_groups, prunable_names
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.jackpot import load_pretrained
from colt_ray.core.tickets.methods import METHODS, Context, Resume, Sink
from colt_ray.core.tickets.records import CycleRecord
from colt_ray.core.tickets.trainer import TicketTrainer, TrainOutcome, build_theta0, shard_head_seed
from colt_ray.core.tweaks import build_run_model


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


def prepare(cfg: RunConfig, run_id: Optional[str] = None) -> Prepared:
    """Validate ``cfg`` against its data and architecture; build theta_0. Raises ConfigError on bad input."""
    validate(cfg)
    METHODS.get(cfg.ticket.method)
    bundle = load_dataset(cfg.data, cfg.ticket.seed)
    validate(cfg, num_classes=bundle.num_classes)
    check_fits(cfg.model.arch, bundle.in_shape)
    shards = make_shards(bundle, cfg.num_shards, cfg.ticket.split, cfg.ticket.seed) if cfg.ticket.method == "colt" else []
    # tweaks first: an unknown activation or skip paths without residual blocks fail before any work
    model = build_run_model(cfg, bundle.in_shape, bundle.num_classes)
    theta0 = build_theta0(cfg, bundle.in_shape, bundle.num_classes)
    if cfg.ticket.method == "jackpot" and cfg.jackpot.pretrained:
        theta0 = load_pretrained(cfg.jackpot.pretrained, model, cfg.model.arch)  # the jackpot's cycle 0 starts here
    groups = param_groups(model)
    prunable = {n: groups[n] for n in prunable_names(model, cfg.prune.groups)}
    run_id = run_id or cfg.run_id()
    return Prepared(cfg, run_id, bundle, shards, Context(cfg, run_id, theta0, prunable))


def run_method(prepared: Prepared, train_shards, train_full, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    """Drive the configured method with the backend's callables; returns the last cycle's record."""
    method = METHODS.get(prepared.cfg.ticket.method)
    return method(prepared.ctx, train_shards, train_full, sink, resume)


class LocalBackend:
    """Every training in this process, one after another (``--backend local``)."""

    def __init__(self, prepared: Prepared):
        cfg = prepared.cfg
        torch.set_num_threads(cfg.resources.threads)
        self.full = TicketTrainer.for_full(cfg, prepared.bundle)
        self.shards = [
            TicketTrainer(cfg, shard_bundle(prepared.bundle, s), s.index, shard_head_seed(cfg, s.index))
            for s in prepared.shards
        ]

    def train_shards(self, theta, mask: Mask, cycle: int) -> list[TrainOutcome]:
        return [t.run(theta, mask, cycle, True) for t in self.shards]

    def train_full(self, theta, mask: Mask, cycle: int, prune_next: bool, capture_step: int) -> TrainOutcome:
        return self.full.run(theta, mask, cycle, prune_next, capture_step)


def run_local(prepared: Prepared, sink: Sink, resume: Optional[Resume] = None) -> CycleRecord:
    backend = LocalBackend(prepared)
    return run_method(prepared, backend.train_shards, backend.train_full, sink, resume)
