"""The distillation tweak (docs/algorithms.md section 3): sparse full-data retraining against the run's dense
trained model, as a wrapper of the full-data ``TicketTrainer``.

The dense training of the run (cycle 0, the unpruned mask) produces the teacher; every later sparse training
uses ``Distiller`` as its loss. A trainer that has not trained the dense model itself (a resumed run, a
transfer) trains it first: the run's dense training with the cycle-0 seed, from theta_0 (from ``theta`` when
the trainer has its own head).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from colt_ray.core.pruning import Mask
from colt_ray.core.tickets.trainer import State, TicketTrainer, TrainOutcome, build_theta0
from colt_ray.core.tweaks import Distiller


class DistillingTrainer:
    """A full-data trainer whose sparse trainings learn from the dense trained model of the same run."""

    def __init__(self, trainer: TicketTrainer):
        self.trainer = trainer
        self.teacher: Optional[dict[str, np.ndarray]] = None  # dense trained weights
        self._distiller: Optional[Distiller] = None

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.model

    def run(
        self, theta: State, mask: Optional[Mask], cycle: int, prune_next: bool, capture_step: int = 0, **kw
    ) -> TrainOutcome:
        dense = mask is None or mask.kept() == mask.numel()
        loss_fn = None if dense else self.distiller(theta)
        out = self.trainer.run(theta, mask, cycle, prune_next, capture_step, loss_fn=loss_fn, **kw)
        if dense and self.teacher is None:
            self.set_teacher(self.trainer.state())
        return out

    def set_teacher(self, state: State) -> None:
        """Use ``state`` (numpy, this model's names) as the dense teacher of every later sparse training."""
        self.teacher = {k: np.asarray(v) for k, v in state.items()}
        self._distiller = None

    def distiller(self, theta: State) -> Distiller:
        """The distillation loss against the dense teacher (trained first if this trainer has none)."""
        t = self.trainer
        if self.teacher is None:
            start = build_theta0(t.cfg, t.bundle.in_shape, t.bundle.num_classes) if t.head_seed is None else theta
            self.run(start, None, 0, False)
        if self._distiller is None:
            model = t.build()
            model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.teacher.items()})
            tw = t.cfg.retrain
            self._distiller = Distiller(
                model.to(t.device),
                tw.distill_temperature,
                tw.distill_weight,
                t.recipe.label_smoothing,
                tw.distill_reduction,
            )
        return self._distiller
