"""Name -> factory registries whose ``get`` fails with the list of valid names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from colt_ray.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries. ``field`` is the user-facing option name used in error messages; ``ordered``
    lists the names in the order they were added (the order a setting's help and messages show) instead of
    sorted. ``colt-ray ticket --list`` prints each entry with its description (:func:`describe`)."""

    def __init__(self, field: str, ordered: bool = False):
        self.field, self.ordered = field, ordered
        self._entries: dict[str, T] = {}
        self._former: dict[str, str] = {}  # a former name -> the entry's name now (still read, never listed)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._entries:
            raise KeyError(f"{self.field} {name!r} is registered twice")
        self._entries[name] = obj

    def alias(self, former: str, name: str) -> None:
        """Let ``former`` (an entry's earlier name) still find entry ``name``; ``names`` never lists it."""
        self._former[former] = name

    def formers(self) -> dict[str, str]:
        """``{former name: name now}`` of every alias."""
        return dict(self._former)

    def get(self, name: str) -> T:
        try:
            return self._entries[self._former.get(name, name)]
        except KeyError:
            raise ConfigError(self.field, f"unknown {name!r}; valid: {', '.join(self.names())}") from None

    def remove(self, name: str) -> T:
        """Take entry ``name`` out again (a test that registers one temporarily)."""
        return self._entries.pop(name)

    def names(self) -> list[str]:
        return list(self._entries) if self.ordered else sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """``(name, description)`` of every entry, in ``names`` order: its ``help`` (or ``summary``,
        ``description``), "" for an entry without one."""
        return [(n, describe(self._entries[n])) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._former)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def describe(entry: object) -> str:
    """An entry's one-line description: its ``help``, ``summary`` or ``description`` attribute, else ""."""
    for attr in ("help", "summary", "description"):
        text = getattr(entry, attr, None)
        if isinstance(text, str) and text:
            return text
    return ""
