"""SGD and Adam as ``torch.optim`` computes them on the CPU (its single-tensor path), written out.

Why not ``torch.optim``: its first ``Optimizer.__init__`` in a process imports ``torch._dynamo``, about 1.4 s
of CPU. Every Ray actor is a new process, so each paid it again; with a few actors on a 2-core machine that
was seconds of every run. These classes do the same arithmetic in the same order, so trainings are
bit-identical to ``torch.optim.SGD``/``Adam`` with default flags (``tests/test_optim.py`` checks it,
step by step). Parameters whose ``grad`` is None are skipped, as there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class _Optimizer:
    """The part of ``torch.optim.Optimizer`` the training loop uses: ``param_groups[i]["lr"]``, ``zero_grad``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float):
        self.param_groups: list[dict[str, Any]] = [{"params": list(params), "lr": lr}]
        self.state: dict[int, dict[str, Any]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _with_grads(self):
        group = self.param_groups[0]
        for i, p in enumerate(group["params"]):
            if p.grad is not None:
                yield self.state.setdefault(i, {}), p, p.grad, group["lr"]


class SGD(_Optimizer):
    """``torch.optim.SGD(params, lr, momentum, weight_decay)`` (no dampening, no Nesterov)."""

    def __init__(
        self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        for state, p, grad, lr in self._with_grads():
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.detach().clone()
                else:
                    buf.mul_(self.momentum).add_(grad, alpha=1)
                grad = buf
            p.add_(grad, alpha=-lr)


class Adam(_Optimizer):
    """``torch.optim.Adam(params, lr, weight_decay)`` with betas (0.9, 0.999), eps 1e-8, L2 weight decay."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(params, lr)
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for state, p, grad, lr in self._with_grads():
            if not state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = state["step"].item()
            step_size = lr / (1 - beta1**step)
            denom = (exp_avg_sq.sqrt() / ((1 - beta2**step) ** 0.5)).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)
