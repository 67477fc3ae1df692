"""Batched shard training: the k shard models of a COLT cycle stacked into one and trained with ``torch.vmap``.

``BatchedShards.train_shards`` is a drop-in for ``LocalBackend.train_shards`` (same ``TrainOutcome`` values,
same metric keys). The shard models are the ones ``TicketTrainer`` builds (theta plus each shard's fresh
head), their parameters and buffers stacked to ``[k, ...]`` (``torch.func.stack_module_state``) and run
through ``vmap(functional_call)``; on a GPU one launch then serves k shards.

How each part of ``train()`` is kept per shard:

* **Heads of unequal size** (class split: 10 classes into 3 shards gives heads of 4, 3, 3). Every head is
  zero-padded to the largest, ``C_max`` rows, and a constant logit offset ``[k, C_max]`` (0 for a real
  class, ``-inf`` for a padded one) is added to the logits. ``log_softmax`` then gives a padded class
  probability exactly 0 and gradient exactly 0, so the padded rows stay exactly 0 under momentum, weight
  decay and Adam; the loss (label smoothing included) is taken over the shard's own ``C_i`` classes and
  ``argmax`` never picks a padded class.
* **Data order**: each shard keeps its own ``generator(seed, "train", cycle, index)``, drawing its own
  ``randperm`` per epoch and its own augmentation per batch in the order ``train()`` draws them, so every
  shard sees exactly the batches it sees in the local backend.
* **Uneven shards**: no padded samples at all. Shard i runs its own ``ceil(n_i / B)`` steps per epoch with
  its own learning-rate schedule (``lr_factor`` with its own steps per epoch). At each global step the shards
  that still have a batch are grouped by batch size and each group is one vmapped call (usually one group:
  all k shards with full batches); a shard that has finished sits the step out with its weights, optimizer
  state and BatchNorm statistics untouched. Batch statistics and mean losses are thus over exactly the
  shard's own samples, as in ``train()``.
* **BatchNorm**: running statistics are stacked buffers ``[k, ...]`` updated in place under vmap, one set per
  shard (``functional_call`` with the stacked buffers).
* **Optimizer**: SGD (momentum, weight decay) and Adam (L2 weight decay) written out on the stacked tensors
  with torch.optim's formulas, with a learning rate and an Adam step count per shard: k independent
  optimizers. No gradient clipping, as ``train()`` has none.
* **Mixed precision** (``recipe.amp``, ``--amp``): the vmapped forward under bfloat16 autocast, as ``train_step``
  runs it, the logits cast back to the parameters' dtype for the loss.
* **Masks**: after every step the pruned weights are multiplied by the mask (broadcast over k), as
  ``MaskApplier`` does, so they are exactly zero.
* **Evaluation and pruning** per shard: at the end of each of its epochs a shard's slice is copied into its
  own ``TicketTrainer`` model and scored with ``train.evaluate`` on its own test (and val) split; after
  training it is pruned by magnitude exactly as ``TicketTrainer.run`` prunes.

**Exactness: the local backend's algorithm; identical tickets in float64, not always in float32.** Under vmap
a linear layer becomes a batched matmul and a convolution one grouped convolution, which sum in another order
than the per-model kernels; everything else (data order, augmentation, schedule, optimizer, pruning rule) is
the same, and every tensor here follows the parameters' dtype. In float64 (rounding ~1e-16) batched and local
give identical masks and ticket accuracies over 3 cycles for lenet300, conv2 and resnet20 (shard weights
within 5e-15). In float32 lenet300 and conv2 are identical too, but resnet20's float32 gradients are inexact
(up to 3e-3 relative, a ReLU behind a BatchNorm flipping sign on rounding), so any change of kernel, oneDNN
switched off included, moves its masks (Jaccard 0.98, 0.90, 0.89 over 3 cycles). Figures, causes and the
command that reproduces them: docs/batched.md, "Exactness"; ``tests/test_batched.py`` checks them.

``wall_seconds`` of a shard is the time from the start of ``train_shards`` until that shard was trained and
pruned (the shards share the batched time), so the slowest shard's equals the call's wall time.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from colt_ray.core.config import RecipeConfig, RunConfig
from colt_ray.core.data import DatasetBundle, Preprocess, shard_bundle
from colt_ray.core.errors import ConfigError, RunError
from colt_ray.core.models import head_module
from colt_ray.core.optim import OPTIMIZERS
from colt_ray.core.pruning import Mask
from colt_ray.core.seeds import generator
from colt_ray.core.tickets.memory import check_fits_memory, estimate_shard_bytes, free_memory, largest_fit
from colt_ray.core.tickets.trainer import TicketTrainer, TrainOutcome, head_keys, shard_head_seed
from colt_ray.core.train import evaluate, lr_factor, resolve_device


class BatchedShards:
    """Trains k shard models of a COLT run as one stacked model on one device (``--backend batched``).

    ``bundles[j]`` is shard ``indices[j]``'s data (``shard_bundle``); any subset of a run's shards may be
    held, e.g. the M shards of one Ray actor. ``memory_limit`` (bytes) replaces the device's free memory
    in the fit check; ``check_memory=False`` skips it.
    """

    def __init__(
        self,
        cfg: RunConfig,
        bundles: Sequence[DatasetBundle],
        indices: Sequence[int],
        *,
        device: Optional[str] = None,
        check_memory: bool = True,
        memory_limit: Optional[int] = None,
    ):
        if not cfg.method.uses_shards:
            raise ConfigError("backend", f"batched trains a method's shards together; {cfg.ticket.method} has none")
        if len(bundles) != len(indices) or not bundles:
            raise ConfigError("shards", f"need one bundle per shard index, got {len(bundles)} and {len(indices)}")
        cfg = cfg.search_config()  # shard trainings are the mask search: no retraining tweaks
        self.cfg, self.indices = cfg, [int(i) for i in indices]
        self.device = resolve_device(device or cfg.resources.device)
        self.trainers = [TicketTrainer(cfg, b, i, shard_head_seed(cfg, i)) for b, i in zip(bundles, self.indices)]
        self.recipe: RecipeConfig = self.trainers[0].recipe
        self.classes = [t.bundle.num_classes for t in self.trainers]
        self.estimated_bytes = [estimate_shard_bytes(t.model, t.bundle, self.recipe) for t in self.trainers]
        self.peak_bytes: Optional[int] = None
        if check_memory:
            check_fits_memory(self.estimated_bytes, self.device, memory_limit)

    @classmethod
    def from_prepared(cls, prepared, shards: Optional[Sequence[int]] = None, **kw) -> BatchedShards:
        """The shards of a ``search.Prepared`` run (all, or the indices in ``shards``)."""
        chosen = [s for s in prepared.shards if shards is None or s.index in set(shards)]
        return cls(prepared.cfg, [shard_bundle(prepared.bundle, s) for s in chosen], [s.index for s in chosen], **kw)

    # ---- the seam ------------------------------------------------------------------------------------
    def train_shards(self, theta, mask: Mask, cycle: int, stop=None) -> list[TrainOutcome]:
        """Train every held shard from ``theta`` under ``mask`` and prune it: ``LocalBackend.train_shards``."""
        try:
            return self._train(theta, mask, cycle)
        except torch.OutOfMemoryError as err:
            fit = largest_fit(self.estimated_bytes, free_memory(self.device))
            raise RunError(
                f"{len(self.trainers)} stacked shard models ran out of memory on {self.device}; "
                f"about {fit} fit (--shards {max(1, fit)}, or --backend ray): {str(err).splitlines()[0]}"
            ) from err

    def memory_report(self) -> dict:
        """Estimated bytes of the k stacked models (weights, grads, optimizer state, activations, data) and the
        measured peak of the last ``train_shards`` (CUDA: max allocated; CPU: the process's max RSS)."""
        kind = "cuda_max_allocated" if self.device.type == "cuda" else "process_max_rss"
        return {
            "k": len(self.trainers),
            "estimated_bytes": int(sum(self.estimated_bytes)),
            "peak_bytes": self.peak_bytes,
            "peak_kind": kind,
        }

    # ---- training --------------------------------------------------------------------------------------
    def _train(self, theta, mask: Optional[Mask], cycle: int) -> list[TrainOutcome]:
        start, cpu = time.perf_counter(), time.process_time()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        mask = mask if mask is not None else Mask.ones_like(self.trainers[0].weights())
        for t in self.trainers:
            t.load(theta)
            t.model.to(self.device).train()
        stack = _Stack(self.trainers, mask, self.device)
        for j in range(len(self.trainers)):
            stack.unstack_into(j)  # the masked start point, in case no step follows (epochs == 0)
        opt = StackedOptimizer(stack.param_list(), self.recipe, len(self.trainers))
        runs = [_ShardRun(t, self.recipe, cycle, self.device) for t in self.trainers]
        wall: list[float] = [0.0] * len(runs)
        for step in range(max(r.total_steps for r in runs)):
            active = [j for j, r in enumerate(runs) if step < r.total_steps]
            batches = {j: runs[j].next_batch(step) for j in active}
            losses = stack.loss_and_grads(batches, self.recipe.label_smoothing, self.recipe.amp)
            lrs = torch.tensor([self.recipe.lr * lr_factor(step, r.steps_per_epoch, self.recipe) for r in runs])
            opt.step(stack.param_list(), stack.grads, lrs, active)
            stack.apply_mask()
            for j in active:
                if runs[j].end_batch(losses[j], step):
                    stack.unstack_into(j)
                    runs[j].end_epoch()
                    if step + 1 == runs[j].total_steps:
                        wall[j] = time.perf_counter() - start
        outs = [self._finish(j, r, mask, cycle, start, wall[j]) for j, r in enumerate(runs)]
        for out in outs:  # the process's CPU time, shared equally by the stacked shards
            out.metrics["cpu_seconds"] = (time.process_time() - cpu) / len(outs)
        self._record_peak()
        return outs

    def _finish(self, j: int, run: _ShardRun, mask: Mask, cycle: int, start: float, wall: float) -> TrainOutcome:
        t = self.trainers[j]
        if run.total_steps == 0:  # epochs == 0: score the loaded model, as train() does
            run.score_untrained()
        proposal = t.prune(mask)
        metrics = run.metrics()
        metrics["wall_seconds"] = time.perf_counter() - start if run.total_steps == 0 else wall
        return TrainOutcome(t.index, cycle, metrics, proposal, None)

    def _record_peak(self) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            import resource

            self.peak_bytes = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


class _ShardRun:
    """One shard's side of ``train()``: its generator, epoch order, batches, schedule position and metrics."""

    def __init__(self, trainer: TicketTrainer, recipe: RecipeConfig, cycle: int, device: torch.device):
        b = trainer.bundle
        self.trainer, self.recipe, self.device = trainer, recipe, device
        self.gen = generator(trainer.cfg.ticket.seed, "train", cycle, trainer.index)
        self.prep = Preprocess(b.mean, b.std, b.augment, device=device)
        self.eval_prep = Preprocess(b.mean, b.std, None, device=device)
        self.x, self.y = b.train.x.to(device), b.train.y.to(device)
        self.n = len(b.train)
        self.steps_per_epoch = max(1, math.ceil(self.n / recipe.batch_size))
        self.total_steps = self.steps_per_epoch * recipe.epochs if self.n else 0
        self.order: Optional[torch.Tensor] = None
        self.total_loss = torch.zeros((), device=device)
        self.best, self.best_val, self.acc, self.last_loss = 0.0, None, 0.0, None
        self.test_at_best_val: Optional[float] = None

    def next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        lo = (step % self.steps_per_epoch) * self.recipe.batch_size
        if lo == 0:  # the epoch's shuffle, drawn before its first batch's augmentation as in train()
            self.order = torch.randperm(self.n, generator=self.gen).to(self.device)
            self.total_loss = torch.zeros((), device=self.device)
        idx = self.order[lo : lo + self.recipe.batch_size]
        return self.prep(self.x[idx], self.gen), self.y[idx]

    def end_batch(self, loss: torch.Tensor, step: int) -> bool:
        """Add the batch's loss; True when this step ended one of the shard's epochs."""
        size = min(self.recipe.batch_size, self.n - (step % self.steps_per_epoch) * self.recipe.batch_size)
        self.total_loss += loss * size
        return (step + 1) % self.steps_per_epoch == 0

    def end_epoch(self) -> None:
        model, b = self.trainer.model, self.trainer.bundle
        self.last_loss = float(self.total_loss) / self.n
        self.acc = evaluate(model, b.test, self.eval_prep, self.device)
        self.best = max(self.best, self.acc)
        if b.val is not None:
            self._val(evaluate(model, b.val, self.eval_prep, self.device))

    def score_untrained(self) -> None:
        model, b = self.trainer.model, self.trainer.bundle
        self.acc = self.best = evaluate(model, b.test, self.eval_prep, self.device)
        if b.val is not None:
            self._val(evaluate(model, b.val, self.eval_prep, self.device))

    def _val(self, val: float) -> None:  # as train.Evaluation: the first epoch of the best validation accuracy
        if self.best_val is None or val > self.best_val:
            self.best_val, self.test_at_best_val = val, self.acc

    def metrics(self) -> dict:
        return {
            "acc_best": self.best,
            "acc_final": self.acc,
            "val_acc_best": self.best_val,
            "test_acc_at_best_val": self.test_at_best_val,
            "loss": self.last_loss,
            "sample_epochs": self.n * self.recipe.epochs,
            "wall_seconds": 0.0,
        }


class _Stack:
    """The k shard models as stacked parameters and buffers ``[k, ...]`` with padded heads and one mask."""

    def __init__(self, trainers: Sequence[TicketTrainer], mask: Mask, device: torch.device):
        self.trainers, self.k = trainers, len(trainers)
        self.classes = [t.bundle.num_classes for t in trainers]
        cmax = max(self.classes)
        self.head_w, self.head_b = head_keys(trainers[0].model)
        models = [_padded_copy(t.model, cmax) for t in trainers]
        params, self.buffers = stack_module_state(models)
        self.params = {n: p.detach().to(device) for n, p in params.items()}
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        self.names = list(self.params)
        self.dtype = self.params[self.names[0]].dtype  # the models' float: logits, offsets and masks follow it
        self.base = copy.deepcopy(models[0]).to("meta")
        cls = torch.arange(cmax, device=device)
        self.valid = cls[None, :] < torch.tensor(self.classes, device=device)[:, None]  # [k, C_max]
        offset = torch.zeros(self.valid.shape, device=device, dtype=self.dtype)
        self.offset = offset.masked_fill(~self.valid, float("-inf"))
        self.masked = [
            (self.params[n], _pad_like(mask[n], self.params[n].shape[1:]).to(device, self.params[n].dtype))
            for n in mask.names()
        ]
        self.grads: list[torch.Tensor] = []
        self.apply_mask()

    def param_list(self) -> list[torch.Tensor]:
        return [self.params[n] for n in self.names]

    @torch.no_grad()
    def apply_mask(self) -> None:
        for p, m in self.masked:
            p.mul_(m)  # [k, ...] * [...]: the same mask for every shard

    def _forward(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return vmap(lambda p, b, xi: functional_call(self.base, (p, b), (xi,)))(params, buffers, x)

    def loss_and_grads(self, batches: dict, alpha: float, amp: bool) -> dict[int, torch.Tensor]:
        """Forward and backward for the shards in ``batches`` (index -> (x, y)); fills ``self.grads``."""
        groups: dict[int, list[int]] = {}
        for j, (_, y) in batches.items():
            groups.setdefault(len(y), []).append(j)
        leaves = [p.requires_grad_(True) for p in self.param_list()]
        total, per_shard = 0.0, {}
        for js in groups.values():
            whole = js == list(range(self.k))  # the usual case: no gather, no write-back
            sel = torch.tensor(js, device=self.valid.device)
            params = self.params if whole else {n: p.index_select(0, sel) for n, p in self.params.items()}
            buffers = self.buffers if whole else {n: b.index_select(0, sel) for n, b in self.buffers.items()}
            x = torch.stack([batches[j][0] for j in js])
            y = torch.stack([batches[j][1] for j in js])
            with torch.autocast(self.valid.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = self._forward(params, buffers, x)
            logits = logits.to(self.dtype) + self.offset[sel][:, None, :]  # autocast's bfloat16 back to the params
            losses = shard_losses(logits, y, self.valid[sel], alpha)
            if not whole:
                with torch.no_grad():
                    for n, b in buffers.items():
                        self.buffers[n].index_copy_(0, sel, b)  # BN statistics of this group's shards
            total = total + losses.sum()
            per_shard.update({j: losses[i].detach() for i, j in enumerate(js)})
        self.grads = list(torch.autograd.grad(total, leaves))
        for p in leaves:
            p.requires_grad_(False)
        return per_shard

    @torch.no_grad()
    def unstack_into(self, j: int) -> None:
        """Copy shard ``j``'s slice (head cut to its own classes) into its trainer's model."""
        model, c = self.trainers[j].model, self.classes[j]
        state = {n: p[j] for n, p in self.params.items()} | {n: b[j] for n, b in self.buffers.items()}
        state[self.head_w], state[self.head_b] = state[self.head_w][:c], state[self.head_b][:c]
        model.load_state_dict(state, strict=True)


def _padded_copy(model: torch.nn.Module, cmax: int) -> torch.nn.Module:
    """A copy of ``model`` whose head has ``cmax`` outputs: its own rows, then zero rows."""
    out = copy.deepcopy(model).to("cpu")
    head = head_module(out)
    if head.out_features == cmax:
        return out
    big = torch.nn.Linear(head.in_features, cmax, bias=head.bias is not None, dtype=head.weight.dtype)
    with torch.no_grad():
        big.weight.zero_()
        big.weight[: head.out_features] = head.weight
        if head.bias is not None:
            big.bias.zero_()
            big.bias[: head.out_features] = head.bias
    parent, _, attr = out.head_name.rpartition(".")
    setattr(out.get_submodule(parent) if parent else out, attr, big)
    return out


def _pad_like(m: torch.Tensor, shape) -> torch.Tensor:
    if tuple(m.shape) == tuple(shape):
        return m
    out = torch.zeros(shape, dtype=m.dtype)
    out[tuple(slice(0, s) for s in m.shape)] = m
    return out


def shard_losses(logits: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-shard mean loss ``[g]`` of ``smoothed_cross_entropy`` for padded logits ``[g, B, C_max]``.

    ``valid[g, C_max]`` marks each shard's real classes; padded logits are -inf (probability 0). Label
    smoothing spreads ``alpha`` over the shard's own ``C_i - 1`` other classes; with one class it is plain CE.
    """
    logp = torch.log_softmax(logits, dim=-1)
    ce = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
    if alpha == 0.0:
        return ce
    c = valid.sum(1)
    soft = (alpha / (c - 1).clamp_min(1)).to(logits.dtype)[:, None, None].expand_as(logits).clone()
    soft.scatter_(-1, y.unsqueeze(-1), 1.0 - alpha)
    # where, not multiply: 0 * -inf at a padded class would be nan
    smoothed = -torch.where(valid[:, None, :], soft * logp, torch.zeros_like(logp)).sum(-1).mean(1)
    return torch.where(c > 1, smoothed, ce)


class StackedOptimizer:
    """k independent optimizers over stacked tensors ``[k, ...]``: the recipe's ``OptimizerSpec.stacked`` step
    (torch.optim's formulas for SGD and Adam, ``core/optim.py``).

    ``step(params, grads, lrs, active)``: ``lrs[k]`` per-shard learning rates; shards not in ``active`` keep
    their weights and optimizer state (and Adam step count) unchanged.
    """

    def __init__(self, params: Sequence[torch.Tensor], recipe: RecipeConfig, k: int):
        spec = OPTIMIZERS.get(recipe.optimizer)
        if spec.stacked is None:
            raise ConfigError("optimizer", f"{spec.name} has no stacked step for --backend batched")
        self.recipe, self.k, self.stacked = recipe, k, spec.stacked
        self.state = [[torch.zeros_like(p) for p in params] for _ in range(spec.slots(recipe))]
        self.steps = torch.zeros(k, dtype=torch.float64)

    @torch.no_grad()
    def step(
        self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], lrs: torch.Tensor, active: Sequence[int]
    ) -> None:
        dev = params[0].device
        on = torch.zeros(self.k, dtype=torch.bool)
        on[list(active)] = True
        every = bool(on.all())
        self.steps += on.to(torch.float64)
        wd = self.recipe.weight_decay
        for i, (p, g) in enumerate(zip(params, grads)):
            shape = (self.k,) + (1,) * (p.ndim - 1)
            g = g.add(p, alpha=wd) if wd != 0 else g
            slots = [s[i] for s in self.state]
            new, values = self.stacked(p, g, slots, self.steps, lrs, shape, self.recipe)
            keep = None if every else on.to(dev).view(shape)
            for slot, val in zip(slots, values):
                slot.copy_(val if keep is None else torch.where(keep, val, slot))
            p.copy_(new if keep is None else torch.where(keep, new, p))


# ---- memory ----------------------------------------------------------------------------------------------
def masks_jaccard(a: dict, b: dict) -> dict[str, float]:
    """Per-tensor Jaccard index |a & b| / |a | b| of two numpy masks (1.0 where both are empty)."""
    out = {}
    for n in a:
        x, y = np.asarray(a[n], bool), np.asarray(b[n], bool)
        union = int((x | y).sum())
        out[n] = 1.0 if union == 0 else int((x & y).sum()) / union
    return out
