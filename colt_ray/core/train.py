"""The one training loop: masked SGD/Adam with warm-up and schedules, opened by callbacks.

Pruned weights stay exactly zero: after every optimizer step the masked weights are multiplied by their
mask in one fused ``torch._foreach_mul_`` call, so a masked step costs almost the same as a plain one
(see ``train_step`` for why the gradients need no masking). Data live as tensors (on the training device);
batches are index slices, preprocessed and augmented as whole-batch tensor ops from a seeded generator, so a
run is bit-identical for a given seed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from colt_ray.core.config import RecipeConfig
from colt_ray.core.data import DatasetBundle, Preprocess, TensorSplit
from colt_ray.core.optim import OPTIMIZERS
from colt_ray.core.pruning.mask import Mask
from colt_ray.core.schedules import SCHEDULES

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets, inputs)


class Callback(Protocol):
    """Hooks into ``train``; every method is optional (see ``BaseCallback``). ``on_epoch_end`` may add to
    ``metrics``; callbacks run in order, so the standard ones (evaluation first) fill it for the rest.
    ``on_step_start`` sees each trained step before it runs: its global step (0-based), its learning rate and
    the training-set indices of its batch; ``on_step_end`` gets the number of steps done (1-based)."""

    def on_step_start(self, step: int, lr: float, indices: torch.Tensor) -> None: ...
    def on_step_end(self, step: int, model: nn.Module) -> None: ...
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None: ...
    def on_train_end(self, model: nn.Module) -> None: ...


class BaseCallback:
    def on_step_start(self, step: int, lr: float, indices: torch.Tensor) -> None:
        pass

    def on_step_end(self, step: int, model: nn.Module) -> None:
        pass

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        pass

    def on_train_end(self, model: nn.Module) -> None:
        pass


class Evaluation(BaseCallback):
    """Test accuracy after every epoch, best kept; with a validation split also the validation accuracy, its
    best, and the test accuracy at the epoch of that best (the first such epoch): the figure to report when
    the validation set selects. A training of zero epochs is evaluated once, at its end."""

    def __init__(self, data: DatasetBundle, device: torch.device):
        self.data, self.device = data, device
        self.prep = Preprocess(data.mean, data.std, None, device=device)
        self.acc, self.best, self.epochs = 0.0, 0.0, 0
        self.best_val: Optional[float] = None
        self.test_at_best_val: Optional[float] = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        self.epochs = epoch
        self.acc = metrics["acc"] = evaluate(model, self.data.test, self.prep, self.device)
        self.best = max(self.best, self.acc)
        if self.data.val is not None:
            self._val(metrics.setdefault("val_acc", evaluate(model, self.data.val, self.prep, self.device)))

    def on_train_end(self, model: nn.Module) -> None:
        if self.epochs == 0:
            self.acc = self.best = evaluate(model, self.data.test, self.prep, self.device)
            if self.data.val is not None:
                self._val(evaluate(model, self.data.val, self.prep, self.device))

    def _val(self, val: float) -> None:
        if self.best_val is None or val > self.best_val:
            self.best_val, self.test_at_best_val = val, self.acc


# the bar class of trainings in this process: tqdm's, or one a host process sets (a Ray actor renders its bars
# in the driver's terminal through Ray's tqdm_ray; ``parallel.actors``), so that the core never imports Ray
BAR_FACTORY: Optional[Callable[..., Any]] = None


def bars_wanted(asked: bool) -> bool:
    """Progress bars only where a person watches a terminal: asked for, and this process's stderr is a TTY
    (or a host process renders them, ``BAR_FACTORY``); in a log file tqdm's carriage-return frames are noise
    and the per-cycle lines say the same."""
    return asked and (BAR_FACTORY is not None or sys.stderr.isatty())


class Progress(BaseCallback):
    """A bar over epochs with the last loss and accuracy, named by split (``val_acc`` where the run holds out
    a validation split, else ``test_acc``); shown only where :func:`bars_wanted`."""

    def __init__(self, epochs: int, desc: str, enabled: bool):
        enabled = bars_wanted(enabled)
        if BAR_FACTORY is not None and enabled:
            self.bar = BAR_FACTORY(total=epochs, desc=desc, unit="epoch")
        else:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, desc=desc, unit="epoch", leave=False, disable=not enabled)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        self.bar.update(1)
        split = (
            {"val_acc": f"{metrics['val_acc']:.3f}"} if "val_acc" in metrics else {"test_acc": f"{metrics['acc']:.3f}"}
        )
        self.bar.set_postfix(loss=f"{metrics['loss']:.3f}", **split)

    def on_train_end(self, model: nn.Module) -> None:
        self.bar.close()


@dataclass
class TrainResult:
    """What one training produced. Accuracies are fractions in [0, 1]."""

    acc_best: float  # best test accuracy over epochs (what the COLT and LTH papers report)
    acc_final: float
    val_acc_best: Optional[float]  # best validation accuracy over epochs (None without a validation split)
    loss: Optional[float]
    sample_epochs: int
    wall_seconds: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    test_acc_at_best_val: Optional[float] = None  # test accuracy at the epoch of val_acc_best

    def metrics(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in METRIC_KEYS}


METRIC_KEYS = ("acc_best", "acc_final", "val_acc_best", "test_acc_at_best_val", "loss", "sample_epochs", "wall_seconds")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_factor(step: int, steps_per_epoch: int, recipe: RecipeConfig) -> float:
    """Multiplier of ``recipe.lr`` at ``step`` (0-based): linear warm-up, then the schedule (``core/schedules.py``)."""
    warm = recipe.warmup * steps_per_epoch
    factor = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    return factor * SCHEDULES.get(recipe.schedule).factor(step, steps_per_epoch, recipe)


def step_plan(
    n: int, recipe: RecipeConfig, steps_like: Optional[int] = None, end_step: Optional[int] = None
) -> tuple[int, int, int, int]:
    """(steps per epoch over ``n`` examples, steps per epoch of the lr schedule, steps trained in all, epochs
    begun) of a training with ``recipe``: by default ``recipe.epochs`` passes over the n examples; with
    ``steps_like`` N the steps (and schedule) of ``recipe.epochs`` passes over N examples; ``end_step`` caps
    the steps."""
    per_epoch = max(1, math.ceil(n / recipe.batch_size))
    schedule = per_epoch if steps_like is None else max(1, math.ceil(steps_like / recipe.batch_size))
    total = recipe.epochs * schedule if end_step is None else min(end_step, recipe.epochs * schedule)
    epochs = recipe.epochs if (steps_like, end_step) == (None, None) else math.ceil(total / per_epoch)
    return per_epoch, schedule, total, epochs


def make_optimizer(params, recipe: RecipeConfig) -> Any:
    """The recipe's optimizer (``core/optim.py`` ``OPTIMIZERS``): ``torch.optim``'s arithmetic without its
    import cost."""
    return OPTIMIZERS.get(recipe.optimizer).make(params, recipe)


def smoothed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, alpha: float) -> torch.Tensor:
    """Cross-entropy against labels smoothed as true class 1 - alpha, every other class alpha / (C - 1)."""
    num_classes = logits.shape[1]
    if alpha == 0.0 or num_classes == 1:
        return F.cross_entropy(logits, targets)
    soft = torch.full_like(logits, alpha / (num_classes - 1))
    soft.scatter_(1, targets.unsqueeze(1), 1.0 - alpha)
    return -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()


class MaskApplier:
    """Keeps the masked parameters of a model exactly zero (fused multiply over all masked tensors)."""

    def __init__(self, model: nn.Module, mask: Optional[Mask], device: torch.device):
        params = dict(model.named_parameters())
        names = [] if mask is None else mask.names()
        self.params = [params[n] for n in names]
        self.masks = [mask[n].to(device=device, dtype=params[n].dtype) for n in names]

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)


def train_step(
    model: nn.Module,
    opt: Any,
    applier: MaskApplier,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    amp: bool = False,
) -> torch.Tensor:
    """One masked optimizer step; returns the detached loss. Pruned weights are exactly 0 afterwards.
    ``amp``: the forward pass under bfloat16 autocast, its logits cast back to the input's float for the loss."""
    if amp:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            logits = model(x)
        logits = logits.to(x.dtype)
    else:
        logits = model(x)
    loss = loss_fn(logits, y, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    # Re-zeroing the pruned weights after the step is enough for exactness: SGD, momentum, weight decay and
    # Adam are elementwise, so whatever their state holds at a pruned position never reaches a surviving
    # weight, and the pruned weight itself is reset to 0 before the next forward pass. Masking the
    # gradients as well would change no surviving weight and costs a second pass over every tensor.
    applier.apply_to_weights()
    return loss.detach()


@torch.no_grad()
def evaluate(
    model: nn.Module, split: TensorSplit, prep: Preprocess, device: torch.device, batch_size: int = 1024
) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (eval mode, no augmentation)."""
    was_training = model.training
    model.eval()
    correct = 0
    for lo in range(0, len(split), batch_size):
        x = prep(split.x[lo : lo + batch_size].to(device))
        correct += int((model(x).argmax(1) == split.y[lo : lo + batch_size].to(device)).sum())
    model.train(was_training)
    return correct / max(1, len(split))


def train(
    model: nn.Module,
    data: DatasetBundle,
    recipe: RecipeConfig,
    mask: Optional[Mask] = None,
    *,
    generator: torch.Generator,
    device: torch.device = torch.device("cpu"),
    callbacks: Sequence[Callback] = (),
    loss_fn: Optional[LossFn] = None,
    progress: bool = False,
    desc: str = "train",
    start_step: int = 0,
    fresh_optimizer_at: int = 0,
    steps_like: Optional[int] = None,
    end_step: Optional[int] = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train`` with ``recipe``; pruned weights (``mask`` False) stay 0.

    ``generator`` drives shuffling and augmentation. ``loss_fn(logits, targets, inputs)`` replaces the
    default (label-smoothed) cross-entropy, e.g. for distillation. Evaluation and the progress bar are the
    standard callbacks (open_lth's ``standard_callbacks``); ``callbacks`` run after them.

    ``start_step`` k trains global steps k..T only, as open_lth's ``train(start_step=k)`` (IMP after a late
    rewind): the data stream of steps 0..k-1 is drawn and dropped (each epoch's permutation, each batch's
    augmentation), so step k trains on the batch and with the learning rate an uninterrupted training has
    there; epochs that end before k are neither trained nor evaluated, and the cost counts steps k..T.
    ``fresh_optimizer_at`` k > 0 replaces the optimizer by a new one (no momentum or Adam moments) before step
    k: open_lth's level 0 under rewinding, a pre-training to step k and a training from k, each its own optimizer.
    ``steps_like`` N (COLT ``shard_steps: match``): train as many steps as the recipe takes over N examples,
    the lr schedule that of that training (the last epoch over ``data`` may be partial); ``end_step`` k: stop
    after global step k (COLT's pre-training to its rewind point). Both: :func:`step_plan`.
    """
    start = time.perf_counter()
    model.to(device).train()
    applier = MaskApplier(model, mask, device)
    applier.apply_to_weights()
    opt = make_optimizer(model.parameters(), recipe)
    prep = Preprocess(data.mean, data.std, data.augment, device=device)
    x_all, y_all = data.train.x.to(device), data.train.y.to(device)
    n = len(data.train)
    steps_per_epoch, schedule_steps, total_steps, epochs = step_plan(n, recipe, steps_like, end_step)
    loss_fn = loss_fn or (lambda logits, y, _x: smoothed_cross_entropy(logits, y, recipe.label_smoothing))
    evaluation = Evaluation(data, device)
    first_epoch = start_step // steps_per_epoch
    hooks = [evaluation, Progress(max(0, epochs - first_epoch), desc, progress), *callbacks]
    starts = [cb.on_step_start for cb in hooks if hasattr(cb, "on_step_start")]
    history: list[dict[str, float]] = []
    step, last_loss, trained = 0, None, 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        total_loss, seen = torch.zeros((), device=device), 0
        for lo in range(0, n, recipe.batch_size):
            if step >= total_steps:
                break
            idx = order[lo : lo + recipe.batch_size]
            if step < start_step:  # before the start: only the augmentation's draws, to keep the stream in step
                if prep.augment.active:
                    prep(x_all[idx], generator)
                step += 1
                continue
            x = prep(x_all[idx], generator)
            if fresh_optimizer_at and step == fresh_optimizer_at:
                opt = make_optimizer(model.parameters(), recipe)
            lr = recipe.lr * lr_factor(step, schedule_steps, recipe)
            for group in opt.param_groups:
                group["lr"] = lr
            for begin in starts:
                begin(step, lr, idx)
            loss = train_step(model, opt, applier, loss_fn, x, y_all[idx], recipe.amp)
            total_loss += loss * len(idx)
            seen += len(idx)
            step += 1
            for cb in hooks:
                cb.on_step_end(step, model)
        if epoch < first_epoch:
            continue
        trained += seen
        last_loss = float(total_loss) / max(1, seen)
        metrics = {"epoch": epoch + 1, "loss": last_loss}
        for cb in hooks:
            cb.on_epoch_end(epoch + 1, metrics, model)
        history.append(metrics)
    for cb in hooks:
        cb.on_train_end(model)
    return TrainResult(
        acc_best=evaluation.best,
        acc_final=evaluation.acc,
        val_acc_best=evaluation.best_val,
        test_acc_at_best_val=evaluation.test_at_best_val,
        loss=last_loss,
        sample_epochs=trained,
        wall_seconds=time.perf_counter() - start,
        steps=max(0, step - start_step),
        history=history,
    )
