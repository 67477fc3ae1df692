"""Lottery jackpots (Zhang, Lin et al., arXiv 2104.08700; docs/algorithms.md section 4): masks searched on frozen
pre-trained weights. The reference is github.com/zyxxmu/lottery-jackpots (``utils/conv_type.py``, ``cifar.py``).

Every layer gets a budget: the number of weights the magnitude mask at the target sparsity keeps there (one
global threshold, or the same fraction per layer, as ``--budget`` says). Every prunable weight gets a
real-valued score, initialised as the reference does: 1 where the magnitude mask keeps the weight, 0.99 where
it prunes it. The forward pass uses the current 0/1 mask; the gradient reaches the scores straight through it
(as if it were the identity), and only the scores are trained (SGD, cosine decay, weight decay on scores).
After every step the mask follows the scores: the top-scoring weights of each layer up to its budget, or,
with the short restriction, the reference's matched in/out swaps (``matched_swaps``).

Weights and BatchNorm affine parameters stay frozen, but the network runs in train mode during the search,
as the reference's ``cifar.py`` does: BatchNorm normalises with batch statistics, and its running statistics
are updated by the *sparse* network's forward passes. Evaluation (eval mode, after every search epoch) uses
those statistics, so a jackpot is a mask on the unchanged weights plus the BatchNorm statistics the search had
collected by then. The reported jackpot is that of the selected epoch (best validation accuracy, else best
test accuracy: the rule of every method's rows, and the reference's best-epoch checkpoint).

Ties between equal scores keep the higher flat index, the rule ``pruning.prune`` uses, so with zero search
epochs the jackpot *is* the magnitude mask (the initial scores select it exactly).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from colt_ray.core.config import RecipeConfig, RunConfig
from colt_ray.core.data import DatasetBundle
from colt_ray.core.pruning import Mask
from colt_ray.core.seeds import generator
from colt_ray.core.tickets.trainer import TicketTrainer, TrainOutcome
from colt_ray.core.train import BaseCallback, MaskApplier, TrainResult, train
from colt_ray.core.tweaks import retrain_recipe


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask keeping the ``k`` highest ``scores``; among equal scores the higher flat index is kept."""
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if k <= 0 or k >= n:
        return torch.full(scores.shape, k > 0, dtype=torch.bool, device=flat.device)
    # a selection (O(n)) instead of a full sort: this runs for every layer at every step of the search
    threshold = torch.kthvalue(flat, n - k + 1).values
    keep = flat > threshold
    ties = (flat == threshold).nonzero().squeeze(1)
    missing = k - int(keep.sum())
    keep[ties[len(ties) - missing :]] = True  # the highest flat indices among equal scores
    return keep.view(scores.shape)


KEPT_SCORE, PRUNED_SCORE = 1.0, 0.99  # the reference's start scores (utils/conv_type.py, set_prune_rate)


def initial_scores(start: Tensor) -> Tensor:
    """The reference's start scores for the bool mask ``start``: 1 where it keeps a weight, 0.99 where not."""
    return torch.where(start, KEPT_SCORE, PRUNED_SCORE).float()


def matched_swaps(old: Tensor, scores: Tensor, k: int) -> Tensor:
    """Short restriction: the reference's mask update (``final_pop_up`` in ``utils/conv_type.py``).

    With ``t`` the (n - k)-th smallest score, the pruned weights scoring above ``t`` enter and the kept ones
    scoring at most ``t`` leave, only when both groups are non-empty and equally large; otherwise ``old``
    stays. Equal groups mean the top ``k`` scores are unambiguous, and then the result is exactly that
    top-k; a tie across the boundary keeps the layer's mask as it is. The reference's ``rate`` (swap only the
    best ``ceil(rate * n)`` pairs) is 1 in its shipped scripts, so all pairs are swapped here.
    """
    flat_old, flat = old.reshape(-1), scores.detach().reshape(-1)
    n_pruned = flat.numel() - k
    if k <= 0 or n_pruned <= 0:
        return old.clone()
    threshold = torch.kthvalue(flat, n_pruned).values
    enter = ~flat_old & (flat > threshold)
    leave = flat_old & (flat <= threshold)
    n_enter, n_leave = enter.sum(), leave.sum()
    swapped = (flat_old & ~leave) | enter
    # a tensor condition rather than Python ints: no device sync per layer per step
    return torch.where((n_enter > 0) & (n_enter == n_leave), swapped, flat_old).view(old.shape)


def first_order_swaps(old: Tensor, new: Tensor, grad: Tensor) -> Tensor:
    """colt_ray's own variant (not in the reference): move from ``old`` towards ``new`` only by matched swaps
    whose first-order loss estimate is negative.

    ``grad`` is dL/dmask (the scores' straight-through gradient): switching weight i on changes the loss by
    about ``grad[i]``, switching j off by ``-grad[j]``. Entering and leaving weights are each sorted best
    first and paired; a pair is accepted while its summed estimate is < 0. The kept count never changes.
    """
    flat_old, flat_new, g = old.reshape(-1), new.reshape(-1), grad.reshape(-1)
    enter = (~flat_old & flat_new).nonzero().squeeze(1)
    leave = (flat_old & ~flat_new).nonzero().squeeze(1)
    n = min(len(enter), len(leave))
    out = flat_old.clone()
    if n == 0:
        return out.view(old.shape)
    enter = enter[torch.sort(g[enter], stable=True).indices][:n]
    leave = leave[torch.sort(-g[leave], stable=True).indices][:n]
    accepted = int(((g[enter] - g[leave]) < 0).sum())  # sums of two ascending lists: a prefix is accepted
    out[enter[:accepted]] = True
    out[leave[:accepted]] = False
    return out.view(old.shape)


class JackpotNet(nn.Module):
    """A frozen network plus one score tensor per masked weight; only the scores are parameters that learn.

    ``train()``/``eval()`` reach the wrapped network: in train mode its BatchNorm layers normalise with batch
    statistics and update their running statistics from the masked network's activations (their affine
    parameters stay frozen), as in the reference's search; eval mode uses the statistics collected so.
    Buffers ``mask0``, ``mask1``, ... hold the current masks (in ``names`` order), refreshed after every
    optimizer step by ``update_masks``.
    """

    def __init__(self, net: nn.Module, start: Mask, short_restriction: bool = False, first_order: bool = False):
        super().__init__()
        self.net = net
        for p in self.net.parameters():  # weights, biases and BatchNorm affine parameters
            p.requires_grad_(False)
        params = dict(net.named_parameters())
        self.names = start.names()
        self.budgets = [int(start[n].sum()) for n in self.names]
        self.scores = nn.ParameterList(
            [nn.Parameter(initial_scores(start[n]).to(params[n].device)) for n in self.names]
        )
        for i, n in enumerate(self.names):
            self.register_buffer(f"mask{i}", start[n].to(params[n].device).clone())
        self.short_restriction, self.first_order = short_restriction, first_order

    def mask(self, i: int) -> Tensor:
        return getattr(self, f"mask{i}")

    def forward(self, x: Tensor) -> Tensor:
        params = dict(self.net.named_parameters())
        masked = {}
        for i, (n, s) in enumerate(zip(self.names, self.scores)):
            m = self.mask(i).to(s.dtype)
            masked[n] = params[n] * (m + (s - s.detach())).to(params[n].dtype)  # value m, gradient to s
        # BatchNorm buffers are not in ``masked``: functional_call uses (and in train mode updates) the net's own
        return functional_call(self.net, masked, (x,))

    @torch.no_grad()
    def update_masks(self) -> None:
        """Per layer: the top-k of the current scores, or the short restriction's matched swaps; then, with
        ``first_order``, only the swaps towards that mask that the gradient says lower the loss."""
        for i, s in enumerate(self.scores):
            old, k = self.mask(i), self.budgets[i]
            new = matched_swaps(old, s, k) if self.short_restriction else topk_mask(s, k)
            if self.first_order and s.grad is not None:
                new = first_order_swaps(old, new, s.grad)
            old.copy_(new)

    def found(self) -> Mask:
        return Mask({n: self.mask(i) for i, n in enumerate(self.names)})


class _UpdateMasks(BaseCallback):
    def on_step_end(self, step: int, model: nn.Module) -> None:
        model.update_masks()


class _SelectEpoch(BaseCallback):
    """Keeps the jackpot of the selected search epoch, by the rule every method's rows follow
    (``train.Evaluation``, ``selection_acc``): the first epoch of the best validation accuracy, or, without a
    validation split, of the best test accuracy (the reference's ``cifar.py`` keeps its best epoch's model).
    Runs after the evaluation callback, so ``metrics`` holds the epoch's accuracies of the current mask under
    the BatchNorm statistics collected so far; it keeps that mask and those statistics."""

    def __init__(self, net: JackpotNet):
        self.net, self.best = net, None
        self.mask: Optional[Mask] = None
        self.buffers: dict[str, Tensor] = {}

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None:
        acc = metrics.get("val_acc", metrics["acc"])
        if self.best is None or acc > self.best:
            self.best = acc
            self.mask = Mask({n: m.clone() for n, m in self.net.found().items()})
            self.buffers = {k: v.clone() for k, v in self.net.net.named_buffers()}

    def restore(self) -> Mask:
        """Put the selected epoch's BatchNorm statistics back into the network; its mask (the final one when
        no epoch ran)."""
        if self.mask is None:
            return self.net.found()
        with torch.no_grad():
            for k, v in self.net.net.named_buffers():
                v.copy_(self.buffers[k])
        return self.mask


def score_recipe(cfg: RunConfig) -> RecipeConfig:
    """The score-training recipe: SGD on scores with ``score_lr``, cosine decay, no warm-up, score decay."""
    j = cfg.jackpot
    return dataclasses.replace(
        retrain_recipe(cfg),
        epochs=j.search_epochs,
        optimizer="sgd",
        lr=j.score_lr,
        weight_decay=j.score_weight_decay,
        schedule="cosine",
        warmup_epochs=0.0,
        milestones=(),
    )


def pretrain_epochs(cfg: RunConfig) -> int:
    """Epochs of dense training before the search: 0 on a loaded file unless asked, else the recipe's."""
    j = cfg.jackpot
    if j.pretrain_epochs >= 0:
        return j.pretrain_epochs
    return 0 if j.pretrained else cfg.recipe.epochs


def search_jackpot(
    model: nn.Module,
    data: DatasetBundle,
    cfg: RunConfig,
    start: Mask,
    *,
    generator: torch.Generator,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    desc: str = "jackpot",
) -> tuple[Mask, TrainResult]:
    """Search a jackpot on ``model``'s weights (left bit-identical) starting from ``start``, whose per-layer
    kept counts are the budgets. Returns the jackpot, the mask of the selected epoch (``_SelectEpoch``: best
    validation accuracy, else best test accuracy), and the score training's result, whose accuracies come from
    its per-epoch history as every training's do. ``model``'s BatchNorm running statistics are updated in
    place by the search (train mode) and left at the selected epoch's: the model in eval mode under the
    returned mask is the jackpot as the search evaluated it at that epoch."""
    j = cfg.jackpot
    net = JackpotNet(model, start, j.short_restriction, j.first_order_swaps)
    select = _SelectEpoch(net)
    try:
        result = train(
            net,
            data,
            score_recipe(cfg),
            None,
            generator=generator,
            device=device,
            callbacks=[_UpdateMasks(), select],
            progress=progress,
            desc=desc,
        )
        return select.restore(), result
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


class JackpotTrainer:
    """The full-data trainer of a jackpot run, wrapping a ``TicketTrainer``. Cycle 0 trains (or, with a
    pre-trained file and no pre-training epochs, only evaluates) the dense model and proposes its magnitude
    mask at the target sparsity; its outcome's ``captured`` is the pre-trained model the search keeps frozen.
    Cycle >= 1 searches the jackpot from the given mask and evaluates it without any weight training; its
    outcome's ``captured`` is the pre-trained model with the BatchNorm statistics the search collected."""

    def __init__(self, trainer: TicketTrainer):
        self.trainer = trainer

    @property
    def model(self) -> nn.Module:
        return self.trainer.model

    def run(self, theta, mask: Optional[Mask], cycle: int, prune_next: bool, capture_step: int = 0) -> TrainOutcome:
        if cycle > 0:
            return self.search(theta, mask, cycle)
        out = self.trainer.run(theta, mask, cycle, prune_next, capture_step, epochs=pretrain_epochs(self.trainer.cfg))
        out.captured = self.trainer.state()
        return out

    def search(self, theta, start: Mask, cycle: int) -> TrainOutcome:
        """Search a mask on the frozen weights ``theta`` from ``start`` (whose per-layer counts are the
        budgets); no weight is trained. The search evaluates the jackpot after every epoch, with the BatchNorm
        running statistics collected so far, and its accuracy columns come from that history by the rule
        every method's rows follow (``acc_best`` the best epoch's test accuracy, ``acc_final`` the last's,
        ``test_acc_at_best_val`` the test accuracy at the best validation epoch). ``mask`` of the outcome =
        the jackpot of the selected epoch; ``captured`` = ``theta`` with that epoch's statistics (the weights
        are unchanged): the state that gives, under the jackpot, ``test_acc_at_best_val`` (with a validation
        split) or ``acc_best`` (without)."""
        t, t0 = self.trainer, time.perf_counter()
        cfg, seed = t.cfg, t.cfg.ticket.seed
        t.load(theta)
        found, search = search_jackpot(
            t.model,
            t.bundle,
            cfg,
            start,
            generator=generator(seed, "jackpot", cycle),
            device=t.device,
            progress=cfg.resources.progress,
            desc=f"cycle {cycle} jackpot search",
        )
        searched = t.state()  # not reloading theta: its BatchNorm statistics are the dense network's
        MaskApplier(t.model, found, t.device).apply_to_weights()  # the model is the jackpot: pruned weights zero
        metrics = search.metrics()
        metrics["wall_seconds"] = time.perf_counter() - t0
        return TrainOutcome(t.index, cycle, metrics, found.to_numpy(), searched)
