"""``TicketTrainer``: train one model (a shard, or the full data) from a rewind point under a mask, then prune.

This is the unit of work of every ticket method and of every backend: the local backend calls it in a loop,
the Ray backend wraps the same class in an actor. Inputs and outputs are CPU numpy arrays and plain dicts,
so nothing device-resident ever crosses a process boundary.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from colt_ray.core.config import RunConfig
from colt_ray.core.data import DatasetBundle
from colt_ray.core.models import head_module, prunable_names, replace_head
from colt_ray.core.pruning import Mask, magnitude_scores, prune
from colt_ray.core.seeds import derive_seed, generator
from colt_ray.core.train import BaseCallback, LossFn, TrainResult, resolve_device, train
from colt_ray.core.tweaks import build_run_model, retrain_recipe, skip_state_keys, start_retraining

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


def charge_pretraining(outs: Sequence[TrainOutcome], cost: dict) -> list[TrainOutcome]:
    """Cycle 0's shard outcomes with the pre-training of theta_k charged once: its sample-epochs and CPU time
    to shard 0, its wall time to every shard (each waited for it), so the sums count it once and the slowest
    shard's wall time is the cycle's critical path (docs/results.md)."""
    charged = []
    for o in outs:
        m = dict(o.metrics)
        m["wall_seconds"] = (m.get("wall_seconds") or 0.0) + cost["wall_seconds"]
        if o is outs[0]:
            m["sample_epochs"] = (m.get("sample_epochs") or 0) + cost["sample_epochs"]
            m["cpu_seconds"] = (m.get("cpu_seconds") or 0.0) + cost["cpu_seconds"]
        charged.append(dataclasses.replace(o, metrics=m))
    return charged


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

    Retraining tweaks (``cfg.retrain``) shape the model (activation, skip paths) and its trainings (label
    smoothing, re-scaled init under a mask); the mask search's trainers get ``cfg.search_config()``, with none.
    Rewind points are the plain model's: a model with skip paths starts them from its own initialisation.
    Distillation (``teacher.DistillingTrainer``) and the jackpot search (``jackpot.JackpotTrainer``) wrap this
    class; ``make_full_trainer`` and ``make_ticket_trainer`` pick the wrappers.
    """

    def __init__(self, cfg: RunConfig, bundle: DatasetBundle, index: int = FULL, head_seed: Optional[int] = None):
        self.cfg, self.bundle, self.index = cfg, bundle, index
        self.device = resolve_device(cfg.resources.device)
        self.model = self.build()
        # the skip paths' initial state: a rewind point (the plain model's) leaves them out
        skip = skip_state_keys(self.model)
        self._own_init = {k: v.clone() for k, v in self.model.state_dict().items() if k in skip}
        self.recipe = retrain_recipe(cfg)
        self.head_seed = head_seed
        self._fresh_head: Optional[dict[str, torch.Tensor]] = None
        if head_seed is not None:
            replace_head(self.model, bundle.num_classes, seed=head_seed)
            w, b = head_keys(self.model)
            sd = self.model.state_dict()
            self._fresh_head = {w: sd[w].clone(), b: sd[b].clone()}
        self.prunable = prunable_names(self.model, cfg.prune.prune_groups)

    @classmethod
    def for_full(cls, cfg: RunConfig, bundle: DatasetBundle) -> TicketTrainer:
        return cls(cfg, bundle, FULL, None)

    # ---- the work -------------------------------------------------------------------------------
    def load(self, theta: State) -> None:
        """Load the rewind point into the model (replacing the head by this trainer's own, if it has one; skip
        paths the rewind point lacks start from their initialisation)."""
        state = {**self._own_init, **{k: torch.from_numpy(np.asarray(v)) for k, v in theta.items()}}
        if self._fresh_head is not None:
            state.update(self._fresh_head)
        self.model.load_state_dict(state, strict=True)

    def run(
        self,
        theta: State,
        mask: Optional[Mask],
        cycle: int,
        prune_next: bool,
        capture_step: int = 0,
        *,
        loss_fn: Optional[LossFn] = None,
        epochs: Optional[int] = None,
    ) -> TrainOutcome:
        """Train from ``theta`` under ``mask``; if ``prune_next``, prune the run's rate of the survivors.
        ``loss_fn`` replaces the recipe's loss (distillation); ``epochs`` the recipe's epochs. ``capture_step``
        k > 0 keeps the state after k steps (``captured``); where the training starts: :func:`rewind_start`."""
        start, cpu = time.perf_counter(), time.process_time()
        mask = mask if mask is not None else Mask.ones_like(self.weights())
        self.load(theta)
        start_retraining(self.model, mask, self.cfg)  # the tweaks' start hooks (density-rescale)
        capture = _Capture(capture_step) if capture_step > 0 else None
        recipe = self.recipe if epochs is None else dataclasses.replace(self.recipe, epochs=epochs)
        start_step = rewind_start(self.cfg, cycle)
        result: TrainResult = train(
            self.model,
            self.bundle,
            recipe,
            mask,
            # after a late rewind a level carries on the first training's data stream from step k
            generator=generator(self.cfg.ticket.seed, "train", 0 if start_step else cycle, self.index),
            device=self.device,
            callbacks=[capture] if capture else [],
            loss_fn=loss_fn,
            progress=self.cfg.resources.progress,
            desc=self.label(cycle),
            start_step=start_step,
            fresh_optimizer_at=capture_step if continues_after_rewind(self.cfg) else 0,
            steps_like=self.steps_like(),
        )
        proposal = self.prune(mask) if prune_next else None
        metrics = result.metrics()
        metrics["wall_seconds"] = time.perf_counter() - start
        metrics["cpu_seconds"] = time.process_time() - cpu  # this process's CPU time (sweep efficiency)
        if capture is not None and capture.state is None:
            raise ValueError(f"rewind-step {capture_step} is beyond the {result.steps} steps of the first training")
        return TrainOutcome(self.index, cycle, metrics, proposal, capture.state if capture else None)

    def steps_like(self) -> Optional[int]:
        """``shard_steps: match``: a shard trains the steps of a full-data training (``train(steps_like=N)``,
        N the full training set's size, which its bundle carries); else None (its own epochs)."""
        if self.index == FULL or self.cfg.ticket.shard_steps != "match":
            return None
        return self.bundle.full_train_size

    def pretrain(self, theta: State, steps: int) -> TrainOutcome:
        """COLT's rewind point theta_k: ``steps`` steps of the full-data recipe from ``theta`` (dense, nothing
        pruned), as open_lth's pre-training; ``captured`` is theta_k, ``metrics`` its cost."""
        start, cpu = time.perf_counter(), time.process_time()
        self.load(theta)
        result = train(
            self.model,
            self.bundle,
            self.recipe,
            None,
            generator=generator(self.cfg.ticket.seed, "train", 0, self.index),
            device=self.device,
            progress=self.cfg.resources.progress,
            desc="pre-training",
            end_step=steps,
        )
        if result.steps < steps:
            raise ValueError(f"rewind-step {steps} is beyond the {result.steps} steps of a full-data training")
        metrics = {"sample_epochs": result.sample_epochs, "wall_seconds": time.perf_counter() - start}
        metrics["cpu_seconds"] = time.process_time() - cpu
        return TrainOutcome(self.index, 0, metrics, None, self.state())

    def prune(self, mask: Mask) -> dict[str, np.ndarray]:
        """The run's prune rate of the survivors of ``mask``, by the magnitude of the current weights."""
        return prune(magnitude_scores(self.weights()), mask, self.cfg.prune_rate, self.cfg.prune.budget).to_numpy()

    def state(self) -> dict[str, np.ndarray]:
        """The model's current state (after a training: the trained weights), as numpy."""
        return state_to_numpy(self.model)

    def build(self) -> torch.nn.Module:
        """A fresh copy of this trainer's network (architecture tweaks applied; weights to be loaded)."""
        return build_run_model(self.cfg, self.bundle.in_shape, self.bundle.num_classes)

    def weights(self) -> dict[str, torch.Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.prunable}

    def label(self, cycle: int) -> str:
        who = "full" if self.index == FULL else f"shard {self.index}"
        return f"cycle {cycle} {who}"


def continues_after_rewind(cfg: RunConfig) -> bool:
    """Whether late rewinding is open_lth's (``rewind_schedule`` continue, a rewind step k > 0). IMP: the
    first level trains steps 0..k and k..T with an optimizer each (open_lth's pre-training, then level 0),
    every later level steps k..T from theta_k with a fresh optimizer (``lottery/runner.py``). COLT: a
    pre-training of k steps (``TicketTrainer.pretrain``), then every shard and ticket training steps k..T."""
    t = cfg.ticket
    return cfg.method.late_rewind and t.rewind_step > 0 and t.rewind_schedule == "continue"


def rewind_start(cfg: RunConfig, cycle: int) -> int:
    """The global step a training of ``cycle`` starts at: the rewind step k for IMP's levels after the first
    under :func:`continues_after_rewind` (their rewind point is theta_k), else 0. Derived here rather than
    passed in, so every backend's trainers (local, Ray actors) start the same levels at the same step."""
    # COLT's theta_k comes from its own pre-training: every training of every cycle starts at k
    first = 0 if cfg.method.uses_shards else 1
    return cfg.ticket.rewind_step if cycle >= first and continues_after_rewind(cfg) else 0


def shard_head_seed(cfg: RunConfig, index: int) -> int:
    return derive_seed(cfg.ticket.seed, "head", "shard", index)


def build_theta0(cfg: RunConfig, in_shape: tuple[int, int, int], num_classes: int) -> dict[str, np.ndarray]:
    """theta_0: the plain model's initial state (no retraining tweaks: they never shape rewind points) with the
    full-class head from the fixed head seed (shared by IMP and COLT's ticket evaluation, for a fair
    comparison)."""
    model = build_run_model(cfg.search_config(), in_shape, num_classes, seed=derive_seed(cfg.ticket.seed, "init"))
    replace_head(model, num_classes, seed=derive_seed(cfg.ticket.seed, "head", "full"))
    assert head_module(model).out_features == num_classes
    return state_to_numpy(model)
