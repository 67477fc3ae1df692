"""``TicketTrainer``: train one model (a shard, or the full data) from a rewind point under a mask, then prune.

This is the unit of work of every ticket method and of every backend: the local backend calls it in a loop,
the Ray backend wraps the same class in an actor. Inputs and outputs are CPU numpy arrays and plain dicts,
so nothing device-resident ever crosses a process boundary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from colt_ray.core.config import RunConfig
from colt_ray.core.data import DatasetBundle, load_dataset, make_shards, shard_bundle
from colt_ray.core.models import build_model, head_module, prunable_names, replace_head
from colt_ray.core.pruning import Mask, magnitude_scores, prune
from colt_ray.core.seeds import derive_seed, generator
from colt_ray.core.train import BaseCallback, TrainResult, resolve_device, train

State = Mapping[str, np.ndarray]
FULL = -1  # trainer index of the full-data model (IMP, ticket evaluation)


@dataclass
class TrainOutcome:
    """One training (and optional prune) of one trainer. Only numpy arrays and plain values inside."""

    index: int
    cycle: int
    metrics: dict
    mask: Optional[dict[str, np.ndarray]] = None  # the pruned proposal, when asked to prune
    captured: Optional[dict[str, np.ndarray]] = None  # the state after ``capture_step`` steps (late rewinding)


def state_to_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().to("cpu").numpy().copy() for k, v in model.state_dict().items()}


def head_keys(model: torch.nn.Module) -> tuple[str, str]:
    name = model.head_name
    return f"{name}.weight", f"{name}.bias"


class _Capture(BaseCallback):
    def __init__(self, step: int):
        self.step, self.state = step, None

    def on_step_end(self, step, model):
        if step == self.step:
            self.state = state_to_numpy(model)


class TicketTrainer:
    """Trains one copy of the network on one dataset bundle.

    ``head_seed`` None: the model's output layer comes from the rewind state (the full-class head of
    theta_0, shared by IMP and COLT's ticket evaluation). Otherwise a fresh head is initialised from that
    seed for this bundle's class count (COLT shard heads, transfer to another dataset).
    """

    def __init__(self, cfg: RunConfig, bundle: DatasetBundle, index: int = FULL, head_seed: Optional[int] = None):
        self.cfg, self.bundle, self.index = cfg, bundle, index
        self.device = resolve_device(cfg.resources.device)
        self.model = build_model(cfg.model.arch, bundle.in_shape, bundle.num_classes, seed=0)
        self.head_seed = head_seed
        self._fresh_head: Optional[dict[str, torch.Tensor]] = None
        if head_seed is not None:
            replace_head(self.model, bundle.num_classes, seed=head_seed)
            w, b = head_keys(self.model)
            sd = self.model.state_dict()
            self._fresh_head = {w: sd[w].clone(), b: sd[b].clone()}
        self.prunable = prunable_names(self.model, cfg.prune.groups)

    # ---- construction from a config alone (what a remote actor does) ------------------------------
    @classmethod
    def for_shard(cls, cfg: RunConfig, index: int) -> "TicketTrainer":
        """Load the data, cut shard ``index`` exactly as every other process does, and keep it."""
        full = load_dataset(cfg.data, cfg.ticket.seed)
        shards = make_shards(full, cfg.num_shards, cfg.ticket.split, cfg.ticket.seed)
        return cls(cfg, shard_bundle(full, shards[index]), index, shard_head_seed(cfg, index))

    @classmethod
    def for_full(cls, cfg: RunConfig, bundle: Optional[DatasetBundle] = None) -> "TicketTrainer":
        return cls(cfg, bundle or load_dataset(cfg.data, cfg.ticket.seed), FULL, None)

    # ---- the work -------------------------------------------------------------------------------
    def load(self, theta: State) -> None:
        """Load the rewind point into the model (replacing the head by this trainer's own, if it has one)."""
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in theta.items()}
        if self._fresh_head is not None:
            state.update(self._fresh_head)
        self.model.load_state_dict(state, strict=True)

    def run(self, theta: State, mask: Optional[Mask], cycle: int, prune_next: bool, capture_step: int = 0) -> TrainOutcome:
        """Train from ``theta`` under ``mask``; if ``prune_next``, prune the run's rate of the survivors."""
        start = time.perf_counter()
        self.load(theta)
        mask = mask if mask is not None else Mask.ones_like(self.weights())
        capture = _Capture(capture_step) if capture_step > 0 else None
        result: TrainResult = train(
            self.model,
            self.bundle,
            self.cfg.recipe,
            mask,
            generator=generator(self.cfg.ticket.seed, "train", cycle, self.index),
            device=self.device,
            callbacks=[capture] if capture else [],
            progress=self.cfg.resources.progress,
            desc=self.label(cycle),
        )
        proposal = None
        if prune_next:
            scores = magnitude_scores(self.weights())
            proposal = prune(scores, mask, self.cfg.prune_rate, self.cfg.prune.budget).to_numpy()
        metrics = result.metrics()
        metrics["wall_seconds"] = time.perf_counter() - start
        if capture is not None and capture.state is None:
            raise ValueError(f"rewind-step {capture_step} is beyond the {result.steps} steps of the first training")
        return TrainOutcome(self.index, cycle, metrics, proposal, capture.state if capture else None)

    def weights(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.prunable}

    def label(self, cycle: int) -> str:
        who = "full" if self.index == FULL else f"shard {self.index}"
        return f"cycle {cycle} {who}"


def shard_head_seed(cfg: RunConfig, index: int) -> int:
    return derive_seed(cfg.ticket.seed, "head", "shard", index)


def build_theta0(cfg: RunConfig, in_shape: tuple[int, int, int], num_classes: int) -> dict[str, np.ndarray]:
    """theta_0: the model's initial state with the full-class head from the fixed head seed (shared by IMP
    and COLT's ticket evaluation, for a fair comparison)."""
    model = build_model(cfg.model.arch, in_shape, num_classes, seed=derive_seed(cfg.ticket.seed, "init"))
    replace_head(model, num_classes, seed=derive_seed(cfg.ticket.seed, "head", "full"))
    assert head_module(model).out_features == num_classes
    return state_to_numpy(model)
