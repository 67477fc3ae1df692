"""Transfer (docs/algorithms.md, COLT step 7): train a ticket found on dataset A on dataset B, with B's fresh head."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from colt_ray.core.config import RunConfig
from colt_ray.core.data import load_dataset
from colt_ray.core.models import check_fits
from colt_ray.core.pruning import Mask
from colt_ray.core.seeds import derive_seed
from colt_ray.core.tickets.io import Ticket, check_ticket_fits
from colt_ray.core.tickets.teacher import DistillingTrainer
from colt_ray.core.tickets.trainer import FULL, TicketTrainer, TrainOutcome, head_keys
from colt_ray.core.tweaks import skip_state_keys, uses


def transfer(ticket: Ticket, cfg: RunConfig) -> TrainOutcome:
    """theta_0 x mask of ``ticket``, a fresh full-class head for ``cfg.data``'s classes, trained with
    ``cfg.recipe``; pruned weights stay exactly zero. The ticket's architecture is used."""
    cfg = cfg.replace(model=dataclasses.replace(cfg.model, arch=ticket.arch))
    torch.set_num_threads(cfg.resources.threads)
    bundle = load_dataset(cfg.data, cfg.ticket.seed)
    check_fits(ticket.arch, bundle.in_shape)
    trainer: Any = TicketTrainer(cfg, bundle, FULL, head_seed=derive_seed(cfg.ticket.seed, "head", "full"))
    if uses(cfg, "distill"):
        trainer = DistillingTrainer(trainer)
    heads = head_keys(trainer.model)
    check_ticket_fits(ticket, trainer.model, skip=heads + tuple(skip_state_keys(trainer.model)))
    theta = {k: v for k, v in ticket.theta.items() if k not in heads}
    mask = Mask({n: m for n, m in ticket.mask.items() if n not in heads})
    return trainer.run(theta, mask, cycle=0, prune_next=False)
