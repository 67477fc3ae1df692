"""Ticket files wherever results live (a local directory or an object-store URI), through the same
``pyarrow.fs`` layer as the Parquet tables.

A run's ticket files refer to its ``theta0.safetensors`` for their weights (theta_0 is stored once per run);
:func:`read_ticket` follows that reference in the same directory, and :func:`export_ticket` writes a
standalone copy that carries its weights (``colt-ray export``).
"""

from __future__ import annotations

from colt_ray.core.errors import ConfigError
from colt_ray.core.tickets.io import Ticket, ticket_bytes, ticket_from_bytes
from colt_ray.results import layout
from colt_ray.results.layout import PathLike
from colt_ray.results.writer import read_file_bytes, write_bytes_atomic


def read_ticket(path: PathLike) -> Ticket:
    """The ticket at ``path`` (local or URI), with the weights of the file it refers to, beside it."""
    text = str(path)
    parent = text.rsplit("/", 1)[0] if "/" in text else "."

    def sibling(ref: str) -> bytes:
        try:
            return read_file_bytes(f"{parent}/{ref}")
        except ConfigError as e:
            raise ConfigError("ticket", f"{text} keeps its weights in {ref} beside it: {e.message}") from None

    return ticket_from_bytes(read_file_bytes(path), text, sibling)


def export_ticket(path: PathLike, out: PathLike) -> str:
    """Write the ticket at ``path`` as one standalone file ``out`` (its weights inside); returns ``out``."""
    ticket = read_ticket(path)
    text = str(out)
    directory, name = text.rsplit("/", 1) if "/" in text else (".", text)
    if layout.is_uri(out) and "/" not in text.split("://", 1)[1]:
        raise ValueError(f"{text}: give a file name inside the bucket")
    write_bytes_atomic(directory, (name,), ticket_bytes(ticket.theta, ticket.mask, ticket.meta))
    return text
