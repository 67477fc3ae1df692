"""``TicketTrainer``: train one model (a shard, or the full data) from a rewind point under a mask, then prune.

This is the unit of work of every ticket method and of every backend: the local backend calls it in a loop,
the Ray backend wraps the same class in an actor. Inputs and outputs are CPU numpy arrays and plain dicts,
so nothing device-resident ever crosses a process boundary.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from colt_ray.core.config import RunConfig
from colt_ray.core.data import DatasetBundle, load_dataset, make_shards, shard_bundle
from colt_ray.core.models import head_module, prunable_names, replace_head
from colt_ray.core.pruning import Mask, magnitude_scores, prune
from colt_ray.core.seeds import derive_seed, generator
from colt_ray.core.tickets.jackpot import pretrain_epochs, search_jackpot
from colt_ray.core.train import BaseCallback, TrainResult, resolve_device, train
from colt_ray.core.tweaks import Distiller, build_run_model, rescale_to_density, retrain_recipe, uses

State = Mapping[str, np.ndarray]
FULL = -1  # trainer index of the full-data model (IMP, ticket evaluation)


@dataclass
class TrainOutcome:
    """One training (and optional prune) of one trainer. Only numpy arrays and plain values inside."""

    index: int
    cycle: int
    metrics: dict
    mask: Optional[dict[str, np.ndarray]] = None  # the pruned proposal, when asked to prune
    # the rewind point for later cycles: the state after ``capture_step`` steps (IMP late rewinding), or the
    # trained dense weights (a jackpot's cycle 0: the pre-trained model the search keeps frozen)
    captured: Optional[dict[str, np.ndarray]] = None


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

    Retraining tweaks (``cfg.retrain``) shape the model (activation, skip paths) and every training (label
    smoothing, re-scaled init under a mask). With ``distill``, the full-data trainer keeps the weights of its
    dense training (the run's dense trained model) and retrains every sparse ticket against them; shard
    trainers never distil (their heads see a subset of the classes). With method ``jackpot``, cycle 0 trains
    (or only evaluates) the dense model and cycle >= 1 searches a jackpot on it (see ``jackpot.py``).
    """

    def __init__(self, cfg: RunConfig, bundle: DatasetBundle, index: int = FULL, head_seed: Optional[int] = None):
        self.cfg, self.bundle, self.index = cfg, bundle, index
        self.device = resolve_device(cfg.resources.device)
        self.model = self.build()
        self.recipe = retrain_recipe(cfg)
        self.teacher: Optional[dict[str, np.ndarray]] = None  # dense trained weights, for distillation
        self._distiller: Optional[Distiller] = None
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
        jackpot = self.cfg.ticket.method == "jackpot"
        if jackpot and cycle > 0:
            return self.search(theta, mask, cycle)
        start = time.perf_counter()
        mask = mask if mask is not None else Mask.ones_like(self.weights())
        dense = mask.kept() == mask.numel()
        loss_fn = self.distiller(theta) if (self.distils and not dense) else None
        self.load(theta)
        if uses(self.cfg, "rescale-init") and not dense:
            rescale_to_density(self.model, mask)
        capture = _Capture(capture_step) if capture_step > 0 else None
        recipe = dataclasses.replace(self.recipe, epochs=pretrain_epochs(self.cfg)) if jackpot else self.recipe
        result: TrainResult = train(
            self.model,
            self.bundle,
            recipe,
            mask,
            generator=generator(self.cfg.ticket.seed, "train", cycle, self.index),
            device=self.device,
            callbacks=[capture] if capture else [],
            loss_fn=loss_fn,
            progress=self.cfg.resources.progress,
            desc=self.label(cycle),
        )
        if self.distils and dense and self.teacher is None:
            self.set_teacher(state_to_numpy(self.model))
        proposal = None
        if prune_next:
            scores = magnitude_scores(self.weights())
            proposal = prune(scores, mask, self.cfg.prune_rate, self.cfg.prune.budget).to_numpy()
        metrics = result.metrics()
        metrics["wall_seconds"] = time.perf_counter() - start
        if capture is not None and capture.state is None:
            raise ValueError(f"rewind-step {capture_step} is beyond the {result.steps} steps of the first training")
        captured = state_to_numpy(self.model) if jackpot else (capture.state if capture else None)
        return TrainOutcome(self.index, cycle, metrics, proposal, captured)

    # ---- tweaks and jackpots --------------------------------------------------------------------
    @property
    def distils(self) -> bool:
        return uses(self.cfg, "distill") and self.index == FULL

    def set_teacher(self, state: State) -> None:
        """Use ``state`` (numpy, this model's names) as the dense teacher of every later sparse training."""
        self.teacher = {k: np.asarray(v) for k, v in state.items()}
        self._distiller = None

    def distiller(self, theta: State) -> Distiller:
        """The distillation loss against the dense teacher. A trainer that has not trained the dense model
        itself (a resumed run, a transfer) trains it first: the run's dense training with the cycle-0 seed,
        from theta_0 (from ``theta`` when this trainer has its own head)."""
        b = self.bundle
        if self.teacher is None:
            self.run(build_theta0(self.cfg, b.in_shape, b.num_classes) if self.head_seed is None else theta, None, 0, False)
        if self._distiller is None:
            model = self.build()
            model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.teacher.items()})
            tw = self.cfg.retrain
            alpha = self.recipe.label_smoothing
            self._distiller = Distiller(model.to(self.device), tw.distill_temperature, tw.distill_weight, alpha)
        return self._distiller

    def search(self, theta: State, start: Mask, cycle: int) -> TrainOutcome:
        """Jackpot cycle: search a mask on the frozen weights ``theta`` from ``start`` (whose per-layer counts
        are the budgets), then evaluate it without any weight training. ``mask`` of the outcome = the jackpot."""
        t0 = time.perf_counter()
        self.load(theta)
        found, search = search_jackpot(
            self.model, self.bundle, self.cfg, start, generator=generator(self.cfg.ticket.seed, "jackpot", cycle),
            device=self.device, progress=self.cfg.resources.progress, desc=f"cycle {cycle} jackpot search",
        )
        self.load(theta)
        evaluated = train(self.model, self.bundle, dataclasses.replace(self.recipe, epochs=0), found,
                          generator=generator(self.cfg.ticket.seed, "eval", cycle), device=self.device)
        metrics = evaluated.metrics()
        metrics.update(loss=search.loss, sample_epochs=search.sample_epochs, wall_seconds=time.perf_counter() - t0)
        return TrainOutcome(self.index, cycle, metrics, found.to_numpy())

    def build(self) -> torch.nn.Module:
        """A fresh copy of this trainer's network (architecture tweaks applied; weights to be loaded)."""
        return build_run_model(self.cfg, self.bundle.in_shape, self.bundle.num_classes)

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
    # skip paths are part of theta_0 (constant init: the base weights are unchanged)
    model = build_run_model(cfg, in_shape, num_classes, seed=derive_seed(cfg.ticket.seed, "init"))
    replace_head(model, num_classes, seed=derive_seed(cfg.ticket.seed, "head", "full"))
    assert head_module(model).out_features == num_classes
    return state_to_numpy(model)
