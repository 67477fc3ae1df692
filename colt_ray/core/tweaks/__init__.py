"""Retraining tweaks for sparse tickets (docs/algorithms.md section 3), each independent and combinable.

They apply only where a ticket is retrained (COLT's ticket evaluations, IMP's per-level retraining, transfer),
never to the mask search: ``RunConfig.search_config`` switches them off for shard trainings and IMP's levels.

* ``activation``: every ReLU replaced by swish, mish, GELU, ELU, softplus, pswish or LiSHT (``swap_activations``);
* ``skip-paths``: two 1x1 conv + BN paths per residual block, after the block's BNs, never pruned
  (``add_skip_paths``);
* ``label-smoothing``: tickets retrained with alpha ``tweak_label_smoothing`` (default 0.1; ``retrain_recipe``);
* ``distill``: sparse full-data retraining against the run's plain dense model (``Distiller``;
  the teacher: ``tickets.teacher``);
* ``density-rescale`` (formerly ``rescale-init``): surviving initial weights scaled by
  ``1/sqrt(layer density)`` (``rescale_to_density``); a fixed rule, not GradInit.

Architecture tweaks (activation, skip paths) shape the retraining model only. theta_0 and every rewind point
are the plain model's; a retraining model starts its skip paths from their own initialisation
(``skip_state_keys``). They add no prunable tensor: the masks fit both models.

Each ``--tweaks`` name is a ``registry.TWEAKS`` entry whose hooks the functions here call (a new tweak: one
entry there). This module imports no torch itself: its re-exported names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from colt_ray.core.tweaks.registry import TWEAKS, Tweak

if TYPE_CHECKING:
    from torch import nn

    from colt_ray.core.config import RecipeConfig, RunConfig
    from colt_ray.core.pruning import Mask

# loaded on first use (PEP 562): the config reads ``tweaks.registry`` at import, before torch
_WHERE = {
    "make_activation": "activations",
    "swap_activations": "activations",
    "rescale_to_density": "init",
    "Distiller": "losses",
    "distillation_loss": "losses",
    "SkipPath": "skip",
    "add_skip_paths": "skip",
    "residual_blocks": "skip",
    "skip_parameter_count": "skip",
    "skip_state_keys": "skip",
}

__all__ = [
    "TWEAKS",
    "Tweak",
    "apply_tweaks",
    "retrain_recipe",
    "start_retraining",
    "tweak_notes",
    "uses",
    "skip_parameters",
    *_WHERE,
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def uses(cfg: RunConfig, tweak: str) -> bool:
    """Whether ``tweak`` (a ``TWEAKS`` name) is switched on in ``cfg``."""
    return tweak in cfg.retrain.names


def switched_on(cfg: RunConfig) -> list[Tweak]:
    """The ``TWEAKS`` entries ``cfg`` switches on, in the order given."""
    return [TWEAKS.get(n) for n in cfg.retrain.names]


def apply_tweaks(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Apply the architecture tweaks of ``cfg`` (activation, then each tweak's ``model`` hook: skip paths) to
    ``model`` in place; return it.

    Raises ConfigError for an unknown activation or for skip paths on a model without residual blocks.
    """
    from colt_ray.core.tweaks.activations import swap_activations

    swap_activations(model, cfg.retrain.activation)
    for tweak in switched_on(cfg):
        if tweak.model is not None:
            tweak.model(model, cfg)
    return model


def start_retraining(model: nn.Module, mask: Mask, cfg: RunConfig) -> None:
    """Each switched-on tweak's ``start`` hook on ``model``, loaded with the weights a retraining under
    ``mask`` starts from (density-rescale)."""
    for tweak in switched_on(cfg):
        if tweak.start is not None:
            tweak.start(model, mask, cfg)


def tweak_notes(cfg: RunConfig, in_shape: tuple[int, int, int], num_classes: int) -> list[str]:
    """The lines the command prints about the switched-on tweaks when a run starts (skip paths' size)."""
    return [t.note(cfg, in_shape, num_classes) for t in switched_on(cfg) if t.note is not None]


def build_run_model(cfg: RunConfig, in_shape: tuple[int, int, int], num_classes: int, seed: int = 0):
    """The run's network: ``cfg.model.arch`` with the architecture tweaks (activation, skip paths) applied.
    Raises ConfigError for a tweak the architecture cannot take."""
    from colt_ray.core.models import build_model

    return apply_tweaks(build_model(cfg.model.arch, in_shape, num_classes, seed=seed, init=cfg.model.init), cfg)


def skip_parameters(cfg: RunConfig, in_shape: tuple[int, int, int], num_classes: int) -> int:
    """Number of skip-path parameters the run's model carries (dense; never counted as pruned weights)."""
    from colt_ray.core.tweaks.skip import skip_parameter_count

    return skip_parameter_count(build_run_model(cfg, in_shape, num_classes))


def retrain_recipe(cfg: RunConfig) -> RecipeConfig:
    """The recipe a training of ``cfg`` uses: ``cfg.recipe`` through each switched-on tweak's ``recipe`` hook:
    the label-smoothing tweak's alpha (``tweak_label_smoothing``) where that tweak is on (the mask search's
    config has it off: ``RunConfig.search_config``, so it trains with the recipe's own ``label_smoothing``)."""
    recipe = cfg.recipe
    for tweak in switched_on(cfg):
        if tweak.recipe is not None:
            recipe = tweak.recipe(recipe, cfg)
    return recipe
