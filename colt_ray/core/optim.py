"""SGD and Adam as ``torch.optim`` computes them on the CPU (its single-tensor path), written out, and
``OPTIMIZERS``, the registry ``--optimizer`` reads.

Why not ``torch.optim``: its first ``Optimizer.__init__`` in a process imports ``torch._dynamo``, about 1.4 s
of CPU. Every Ray actor is a new process, so each paid it again; with a few actors on a 2-core machine that
was seconds of every run. These classes do the same arithmetic in the same order, so trainings are
bit-identical to ``torch.optim.SGD``/``Adam`` with default flags (``tests/test_optim.py`` checks it,
step by step). Parameters whose ``grad`` is None are skipped, as there.

A new optimizer is one ``OptimizerSpec`` entry here: its name, help, how it is built from the recipe, how
many state tensors per weight it keeps (the batched backend's memory estimate) and, optionally, its step on
k stacked models (``--backend batched``; without one that backend refuses it). The config's choices,
``--help``, ``colt-ray ticket --list`` and validation read the registry. torch is imported inside the
functions, so the command line reads the names without importing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from colt_ray.core.registry import Registry

if TYPE_CHECKING:
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

    def step(self) -> None:
        import torch

        with torch.no_grad():
            self._step()

    def _step(self) -> None:
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

    def step(self) -> None:
        import torch

        with torch.no_grad():
            self._step()

    def _step(self) -> None:
        import torch

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


# ---- the registry ------------------------------------------------------------------------------------
Stacked = Callable[..., tuple[Any, list[Any]]]  # (p, g, slots, steps, lrs, shape, recipe) -> (new p, new slots)


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: ``make(params, recipe)`` builds it; ``slots(recipe)`` is the number of state tensors
    it keeps per weight; ``stacked`` is one step on k stacked models (``core/tickets/batched.py``
    ``StackedOptimizer``): ``(p, g, slots, steps, lrs, shape, recipe)`` with ``g`` the gradient with weight
    decay added, ``slots`` this tensor's state, ``steps`` each shard's step count, ``lrs`` each shard's lr,
    ``shape`` the broadcast shape ``[k, 1, ...]``; it returns the new weights and the new state."""

    name: str
    help: str
    make: Callable[[Iterable[Any], Any], Any]
    slots: Callable[[Any], int]
    stacked: Optional[Stacked] = None


OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer", ordered=True)


def add(spec: OptimizerSpec) -> OptimizerSpec:
    OPTIMIZERS.add(spec.name, spec)
    return spec


def _sgd_stacked(p, g, slots, steps, lrs, shape, recipe):
    new = []
    if slots:
        buf = slots[0] * recipe.momentum + g  # torch: buf = g on the first step (buf is 0 here)
        new, g = [buf], buf
    lr = lrs.to(device=p.device, dtype=p.dtype).view(shape)
    return p - lr * g, new


def _adam_stacked(p, g, slots, steps, lrs, shape, recipe, beta1=0.9, beta2=0.999, eps=1e-8):
    import torch

    m = slots[0].lerp(g, 1 - beta1)
    v = slots[1] * beta2 + (1 - beta2) * g * g
    steps = steps.clamp_min(1)  # inactive shards at step 0 compute a discarded update
    step_size = (lrs.double() / (1 - beta1**steps)).to(p.device, p.dtype).view(shape)
    bc2_sqrt = torch.sqrt(1 - beta2**steps).to(p.device, p.dtype).view(shape)
    denom = v.sqrt() / bc2_sqrt + eps
    return p - step_size * m / denom, [m, v]


add(
    OptimizerSpec(
        "sgd",
        "SGD with --momentum and --weight-decay (torch.optim.SGD's arithmetic)",
        lambda params, r: SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay),
        lambda r: 1 if r.momentum else 0,
        _sgd_stacked,
    )
)
add(
    OptimizerSpec(
        "adam",
        "Adam, betas (0.9, 0.999), eps 1e-8, L2 --weight-decay (torch.optim.Adam's arithmetic; --momentum unused)",
        lambda params, r: Adam(params, lr=r.lr, weight_decay=r.weight_decay),
        lambda r: 2,
        _adam_stacked,
    )
)
