"""Retraining losses: knowledge distillation from the run's plain dense model (label smoothing lives in
``colt_ray.core.train.smoothed_cross_entropy``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colt_ray.core.train import smoothed_cross_entropy


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 5.0,
    weight: float = 0.9,
    alpha: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``weight * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - weight) * CE(student, targets)``.

    ``reduction`` "mean" averages the pointwise KL terms over batch *and* classes (``nn.KLDivLoss()``'s
    default, which the reference retraining code uses); "batchmean" sums over classes and averages over the
    batch (the true KL per sample: C times the "mean" value). The T^2 keeps the soft-label gradients on the
    scale of the hard-label ones (Hinton et al.). ``alpha`` label-smooths the cross-entropy term.
    """
    t = float(temperature)
    log_student = F.log_softmax(student / t, dim=1)
    soft_teacher = F.softmax(teacher.detach() / t, dim=1)
    # spelled out rather than reduction="mean", whose meaning torch plans to change to "batchmean"
    total = F.kl_div(log_student, soft_teacher, reduction="sum")
    kl = total / (student.numel() if reduction == "mean" else student.shape[0])
    return weight * t * t * kl + (1.0 - weight) * smoothed_cross_entropy(student, targets, alpha)


class Distiller:
    """A ``train(..., loss_fn=)`` loss: the teacher (eval mode, no gradients) labels every augmented batch."""

    def __init__(
        self, teacher: nn.Module, temperature: float, weight: float, alpha: float = 0.0, reduction: str = "mean"
    ):
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.weight, self.alpha, self.reduction = temperature, weight, alpha, reduction

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return distillation_loss(
            logits, teacher_logits, targets, self.temperature, self.weight, self.alpha, self.reduction
        )
