"""The distillation tweak (docs/algorithms.md section 3): sparse full-data retraining against the run's plain
dense trained model, as a wrapper of the full-data ``TicketTrainer``.

The teacher is the plain dense model, as KD-ticket's (its ``cifar_lt_kd.py`` distils from the final
checkpoint of ``cifar_baseline.py``, the unpruned network trained with the plain recipe): the run's dense
training from theta_0 with the cycle-0 seed and the mask search's config (no retraining tweak: no label
smoothing tweak, no activation or skip paths, no distillation). One run trains it once:

* IMP's level 0 *is* that training: its weights become the teacher at no extra cost (``keeps_teacher``);
* a dense retraining that no tweak changes (distillation and density-rescale alone) is that training too;
* otherwise the first sparse retraining that needs it trains it (``DistillingTrainer.train_teacher``) and its
  row carries the cost (``charge``: added to ``sample_epochs``, ``wall_seconds``, ``cpu_seconds``, and
  recorded as ``teacher_sample_epochs``). On Ray the coordinator has it trained once and hands its weights to
  every evaluating actor (``set_teacher``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from colt_ray.core.config import RunConfig
from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.trainer import State, TicketTrainer, TrainOutcome, build_theta0
from colt_ray.core.tweaks import TWEAKS, Distiller, uses

COST_KEYS = ("sample_epochs", "wall_seconds", "cpu_seconds")


@dataclass
class Teacher:
    """The dense teacher's weights (numpy, the plain model's names) and what training it cost: None when the
    cost is already in a row of the run (IMP's level 0, a plain dense retraining) or still to be charged."""

    state: dict[str, np.ndarray]
    cost: Optional[dict] = None


def dense(mask: Optional[Mask]) -> bool:
    return mask is None or mask.kept() == mask.numel()


def keeps_teacher(cfg: RunConfig, cycle: int, mask: Optional[Mask]) -> bool:
    """Whether a mask-search training of ``cycle`` under ``mask`` is the teacher's very training (the run's
    plain dense training from theta_0: IMP's level 0), so that a distilling run keeps its weights."""
    return uses(cfg, "distill") and cycle == 0 and dense(mask)


def dense_retraining_is_plain(cfg: RunConfig) -> bool:
    """Whether the run's dense retraining equals the plain dense training (no tweak but distillation or
    density-rescale, ReLU kept): its weights are then the teacher's."""
    neutral = all(TWEAKS.get(n).dense_neutral for n in cfg.retrain.names)  # registry: ``Tweak.dense_neutral``
    return neutral and cfg.retrain.activation == "relu"


def charge(metrics: dict, cost: Optional[dict]) -> dict:
    """``metrics`` of the retraining that needed the teacher, with the teacher's training added to its cost
    (``teacher_sample_epochs``: the part of ``sample_epochs`` that trained the teacher)."""
    if cost is None:
        return metrics
    summed = {k: (metrics.get(k) or 0) + (cost.get(k) or 0) for k in COST_KEYS}
    return {**metrics, **summed, "teacher_sample_epochs": cost.get("sample_epochs") or 0}


class DistillingTrainer:
    """A full-data trainer whose sparse trainings learn from the plain dense model of the same run."""

    def __init__(self, trainer: TicketTrainer, teacher: Optional[Teacher] = None):
        self.trainer = trainer
        self.teacher: Optional[Teacher] = None
        self._plain: Optional[TicketTrainer] = None  # the plain twin that trains (and holds) the teacher
        self._distiller: Optional[Distiller] = None
        if teacher is not None:
            self.set_teacher(teacher)

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def run(
        self, theta: State, mask: Optional[Mask], cycle: int, prune_next: bool, capture_step: int = 0, **kw
    ) -> TrainOutcome:
        """A dense training as it is (a dense ticket is never distilled); a sparse one against the teacher,
        which the first sparse training trains when the run has none yet and then carries its cost."""
        if dense(mask):
            out = self.trainer.run(theta, mask, cycle, prune_next, capture_step, **kw)
            if self.teacher is None and dense_retraining_is_plain(self.trainer.cfg):
                self.set_teacher(Teacher(self.trainer.state()))  # the plain dense training itself
            return out
        cost = None
        if self.teacher is None:
            cost = self.train_teacher(theta).cost
        out = self.trainer.run(theta, mask, cycle, prune_next, capture_step, loss_fn=self.distiller(), **kw)
        out.metrics = charge(out.metrics, cost)
        return out

    def plain(self) -> TicketTrainer:
        """The plain twin of this trainer: same data, index and head, the mask search's config."""
        if self._plain is None:
            t = self.trainer
            self._plain = TicketTrainer(t.cfg.search_config(), t.bundle, t.index, t.head_seed)
        return self._plain

    def train_teacher(self, theta: Optional[State] = None) -> Teacher:
        """Train the plain dense model (from theta_0, or from ``theta`` with this trainer's own head, as a
        transfer) with the cycle-0 seed; it becomes this trainer's teacher. Its cost comes back in
        ``Teacher.cost`` for the caller to charge once."""
        t, plain = self.trainer, self.plain()
        start = build_theta0(t.cfg, t.bundle.in_shape, t.bundle.num_classes) if t.head_seed is None else theta
        out = plain.run(start, None, 0, False)
        cost = {k: out.metrics.get(k) for k in COST_KEYS}
        self.set_teacher(Teacher(plain.state()))
        return Teacher(self.teacher.state, cost)

    def set_teacher(self, teacher: Teacher) -> None:
        """Use ``teacher`` as the dense teacher of every later sparse training."""
        self.teacher = Teacher({k: np.asarray(v) for k, v in teacher.state.items()}, teacher.cost)
        self._distiller = None

    def distiller(self) -> Distiller:
        """The distillation loss against the teacher (a plain model holding its weights)."""
        assert self.teacher is not None, "a sparse distilled training needs the teacher first"
        if self._distiller is None:
            t, model = self.trainer, self.plain().build()
            model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.teacher.state.items()})
            tw = t.cfg.retrain
            self._distiller = Distiller(
                model.to(t.device), tw.distill_temperature, tw.distill_weight, t.recipe.label_smoothing,
                tw.distill_reduction,
            )  # fmt: skip
        return self._distiller
