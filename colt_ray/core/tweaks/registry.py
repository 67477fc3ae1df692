"""The retraining tweaks ``--tweaks`` switches on: one ``Tweak`` per name in ``TWEAKS`` (docs/algorithms.md
section 3). ``--activation`` is its own setting (``activations.FACTORIES``).

A tweak acts through hooks the retraining calls for every switched-on tweak, in the order given: ``model``
changes the retraining model's architecture (``apply_tweaks``), ``recipe`` its recipe (``retrain_recipe``),
``start`` the weights a retraining starts from (``TicketTrainer.run``), ``note`` is the line the command
prints when a run starts. ``dense_neutral`` marks a tweak that leaves a dense retraining equal to the plain
dense training (so a distilling run's teacher serves as its dense ticket: ``core/tickets/teacher.py``).
Distillation is the one tweak wired outside these hooks: its teacher and trainer wrapper (``tickets/
teacher.py``, ``search.py``, ``transfer.py`` and ``parallel/coordinator.py`` ask ``uses(cfg, "distill")``).

The config's ``tweaks`` setting, its ``--help``, ``colt-ray ticket --list``, validation and sweep YAML checks
read the registry: a new tweak built from these hooks is one entry here. Pure Python at import (hooks import
torch when called), so the command line checks the names before it imports anything heavy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from colt_ray.core.registry import Registry


@dataclass(frozen=True)
class Tweak:
    """``model(model, cfg)``, ``recipe(recipe, cfg) -> recipe``, ``start(model, mask, cfg)`` (model loaded
    with the weights a retraining under ``mask`` starts from), ``note(cfg, in_shape, num_classes) -> line``."""

    name: str
    help: str
    model: Optional[Callable[[Any, Any], None]] = None
    recipe: Optional[Callable[[Any, Any], Any]] = None
    start: Optional[Callable[[Any, Any, Any], None]] = None
    note: Optional[Callable[[Any, tuple, int], str]] = None
    dense_neutral: bool = False


TWEAKS: Registry[Tweak] = Registry("tweaks", ordered=True)


def add(tweak: Tweak) -> Tweak:
    TWEAKS.add(tweak.name, tweak)
    return tweak


def _smooth(recipe: Any, cfg: Any) -> Any:
    return dataclasses.replace(recipe, label_smoothing=cfg.retrain.tweak_label_smoothing)


def _skip(model: Any, cfg: Any) -> None:
    from colt_ray.core.tweaks.skip import add_skip_paths

    add_skip_paths(model, cfg.model.arch)


def _skip_note(cfg: Any, in_shape: tuple, num_classes: int) -> str:
    from colt_ray.core.tweaks import skip_parameters

    n = skip_parameters(cfg, in_shape, num_classes)
    return f"skip paths: {n:,} dense parameters, never pruned, not counted in sparsity"


def _rescale(model: Any, mask: Any, cfg: Any) -> None:
    if mask.kept() < mask.numel():  # a dense mask has density 1: nothing to rescale
        from colt_ray.core.tweaks.init import rescale_to_density

        rescale_to_density(model, mask)


add(Tweak("label-smoothing", "tickets retrained with alpha --tweak-label-smoothing", recipe=_smooth))
add(
    Tweak(
        "skip-paths",
        "two 1x1 conv + BN paths per residual block, never pruned (residual architectures)",
        model=_skip,
        note=_skip_note,
    )
)
add(
    Tweak(
        "distill",
        "sparse full-data retraining against the run's plain dense model (--distill-*)",
        dense_neutral=True,
    )
)
add(
    Tweak(
        "density-rescale",
        "surviving initial weights scaled by 1/sqrt(layer density) before a retraining",
        start=_rescale,
        dense_neutral=True,
    )
)
TWEAKS.alias("rescale-init", "density-rescale")  # its former name, still read (run ids keep it: config.py)
