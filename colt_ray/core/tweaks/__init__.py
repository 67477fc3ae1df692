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
"""

from __future__ import annotations

import dataclasses

from torch import nn

from colt_ray.core.config import RecipeConfig, RunConfig
from colt_ray.core.tweaks.activations import make_activation, swap_activations
from colt_ray.core.tweaks.init import rescale_to_density
from colt_ray.core.tweaks.losses import Distiller, distillation_loss
from colt_ray.core.tweaks.skip import SkipPath, add_skip_paths, residual_blocks, skip_parameter_count, skip_state_keys

__all__ = [
    "apply_tweaks",
    "retrain_recipe",
    "uses",
    "make_activation",
    "swap_activations",
    "add_skip_paths",
    "residual_blocks",
    "skip_parameter_count",
    "skip_state_keys",
    "skip_parameters",
    "SkipPath",
    "Distiller",
    "distillation_loss",
    "rescale_to_density",
]


def uses(cfg: RunConfig, tweak: str) -> bool:
    """Whether ``tweak`` (one of ``config.TWEAKS``) is switched on in ``cfg``."""
    return tweak in cfg.retrain.names


def apply_tweaks(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """Apply the architecture tweaks of ``cfg`` (activation, skip paths) to ``model`` in place; return it.

    Raises ConfigError for an unknown activation or for skip paths on a model without residual blocks.
    """
    swap_activations(model, cfg.retrain.activation)
    if uses(cfg, "skip-paths"):
        add_skip_paths(model, cfg.model.arch)
    return model


def build_run_model(cfg: RunConfig, in_shape: tuple[int, int, int], num_classes: int, seed: int = 0):
    """The run's network: ``cfg.model.arch`` with the architecture tweaks (activation, skip paths) applied.
    Raises ConfigError for a tweak the architecture cannot take."""
    from colt_ray.core.models import build_model

    return apply_tweaks(build_model(cfg.model.arch, in_shape, num_classes, seed=seed, init=cfg.model.init), cfg)


def skip_parameters(cfg: RunConfig, in_shape: tuple[int, int, int], num_classes: int) -> int:
    """Number of skip-path parameters the run's model carries (dense; never counted as pruned weights)."""
    return skip_parameter_count(build_run_model(cfg, in_shape, num_classes))


def retrain_recipe(cfg: RunConfig) -> RecipeConfig:
    """The recipe a training of ``cfg`` uses: ``cfg.recipe``, with the label-smoothing tweak's alpha
    (``tweak_label_smoothing``) where the tweak is on (the mask search's config has it off:
    ``RunConfig.search_config``, so it trains with the recipe's own ``label_smoothing``)."""
    recipe = cfg.recipe
    if uses(cfg, "label-smoothing"):
        return dataclasses.replace(recipe, label_smoothing=cfg.retrain.tweak_label_smoothing)
    return recipe
