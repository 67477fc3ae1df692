"""Command-line flags generated from the config: one flag per ``RunConfig`` field, with the help, type, default
and allowed names its ``Setting`` declares (``colt_ray.core.settings``), grouped by config section."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from colt_ray.core.config import default_of, flag_name, item_type, section_fields, setting_of, value_type
from colt_ray.core.settings import is_light

# command-line groups of the ``ticket`` flags, each over whole config sections (every field becomes a flag)
TICKET_GROUPS = [
    ("method", ("ticket", "model", "prune")),
    ("data", ("data",)),
    ("training recipe (every training: shards, IMP levels, ticket evaluation)", ("recipe",)),
    ("retraining tweaks (docs/algorithms.md section 3; each independent, combinable)", ("retrain",)),
    (
        "jackpot (--method jackpot: a mask searched on frozen pre-trained weights; sparsity = --target-sparsity, "
        "default 0.9; per-layer budgets from --budget)",
        ("jackpot",),
    ),
    ("execution (never changes the ticket found)", ("resources",)),
]
# flags whose former spelling now means another value: (flag, setting, value)
LEGACY_FLAGS = [("--no-eval-tickets", "eval_tickets", "none")]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help already speaks of its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(action, argparse._StoreTrueAction)
        ):
            return text
        shown = ",".join(map(str, action.default)) if isinstance(action.default, tuple) else action.default
        return f"{text} (default: {shown if shown != '' else 'none'})"


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}, got {text!r}"
            ) from None

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def add_setting(group: Any, name: str, *, required: bool = False) -> None:
    """One flag for config field ``name``, from its ``Setting``: type, default, allowed names and help."""
    spec, kind, default = setting_of(name), value_type(name), default_of(name)
    help_text = spec.help
    allowed = spec.allowed() if spec.choices is not None and is_light(spec.choices) else None
    if allowed:
        help_text += f": {', '.join(allowed)}"
    elif callable(spec.choices):
        help_text += " (names: colt-ray ticket --list)"
    if spec.default_text:
        help_text += f" (default: {spec.default_text})"
    flags = [f"--{flag_name(name)}", *[a for a in spec.aliases if a not in {f for f, _, _ in LEGACY_FLAGS}]]
    kw: dict[str, Any] = {"dest": name, "help": help_text}
    if spec.metavar:
        kw["metavar"] = spec.metavar
    if kind is bool:
        group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=default, **kw)
        return
    kw["type"] = _csv(item_type(name)) if kind is tuple else kind
    group.add_argument(*flags, default=None if required else default, required=required, **kw)


def add_sections(
    parser: argparse.ArgumentParser, groups: list, *, only: Optional[set] = None, required: tuple[str, ...] = ()
) -> None:
    """The flags of every field of the named config sections (or of the ``only`` fields among them)."""
    for title, sections in groups:
        names = [f.name for sec in sections for f in section_fields(sec) if only is None or f.name in only]
        if names:
            group = parser.add_argument_group(title)
            for name in names:
                add_setting(group, name, required=name in required)


def add_legacy(parser: argparse.ArgumentParser) -> None:
    for flag, name, value in LEGACY_FLAGS:
        parser.add_argument(flag, dest=name, action="store_const", const=value, help=argparse.SUPPRESS)
