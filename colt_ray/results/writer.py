"""Atomic Parquet writers for runs, cycles, layers and trials (see :mod:`colt_ray.results.layout`).

Every file is written to ``<name>.tmp-<random>`` in its final directory, flushed and fsynced, then renamed
over the final name (``os.replace``: atomic on a local filesystem). A killed writer leaves at most a
temporary file, which readers ignore; rewriting a (run, cycle) replaces its single file.
Non-local outputs (``s3://...``) go through ``pyarrow.fs``: write a temporary object, then ``move`` it.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Iterable
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from colt_ray.core.errors import ConfigError
from colt_ray.results import layout, schema
from colt_ray.results.layout import PathLike


class ResultsWriter:
    """Writes the results tables of one output directory (a run's ``--out`` or a sweep directory).

    ``out`` is a local path or a ``pyarrow.fs`` URI; ``filesystem`` (a ``pyarrow.fs.FileSystem``) forces
    filesystem I/O with ``out`` taken as a path inside it. Different runs write different files, so many
    writers (one per run/worker) can share ``out``.
    """

    def __init__(self, out: PathLike, filesystem: Any = None):
        self.out = os.fspath(out)
        self._fs, self._root = layout.resolve(out, filesystem)

    def write_run(self, row: dict[str, Any]) -> str:
        """Write (or replace) ``runs/<run_id>.parquet`` from one RUNS row; returns the path written.

        ``schema_version``, ``colt_ray_version``, ``python_version`` and ``hostname`` are filled in when absent.
        """
        row = dict(row)
        row.setdefault("schema_version", schema.SCHEMA_VERSION)
        row.setdefault("colt_ray_version", _colt_ray_version())
        row.setdefault("python_version", platform.python_version())
        row.setdefault("hostname", default_hostname())
        _check_status(row.get("status"), schema.RUN_STATUSES, "runs")
        table = schema.to_table([row], schema.RUNS)
        return self._write(table, layout.runs_rel(str(row["run_id"])))

    def write_cycle(
        self, run_id: str, cycle: int, cycle_rows: list[dict[str, Any]], layer_rows: list[dict[str, Any]]
    ) -> tuple[str, str]:
        """Write (or replace) all rows of one (run, cycle): the CYCLES rows (shards and the ticket row,
        ``shard`` None) and the LAYERS rows. ``run_id``/``cycle`` are filled into rows that lack them and
        must match rows that have them. Returns ``(cycles path, layers path)``.
        """
        cycles = schema.to_table(_own(cycle_rows, run_id, cycle, "cycles"), schema.CYCLES)
        layers = schema.to_table(_own(layer_rows, run_id, cycle, "layers"), schema.LAYERS)
        layers_path = self._write(layers, layout.layers_rel(run_id, cycle))
        return self._write(cycles, layout.cycles_rel(run_id, cycle)), layers_path

    def write_trials(self, rows: Iterable[dict[str, Any]]) -> str:
        """Write (or replace) the sweep-level ``trials.parquet`` from TRIALS rows (one per trial)."""
        rows = list(rows)
        for row in rows:
            _check_status(row.get("status"), schema.TRIAL_STATUSES, "trials")
        return self._write(schema.to_table(rows, schema.TRIALS), (layout.TRIALS_FILE,))

    def _write(self, table: pa.Table, rel: tuple[str, ...]) -> str:
        if self._fs is None:
            path = os.path.join(self._root, *rel)
            write_local_atomic(table, path)
        else:
            path = layout.join(self._root, *rel, remote=True)
            write_fs_atomic(self._fs, table, path)
        return path


def write_local_atomic(table: pa.Table, path: str, **options: Any) -> None:
    """Write ``table`` to local ``path`` atomically (:func:`_local_atomic`); ``options`` go to
    ``pyarrow.parquet.write_table`` (row group size, compression)."""
    _local_atomic(path, lambda fh: pq.write_table(table, fh, **options))


def _local_atomic(path: str, write: Any) -> None:
    """``write(file)`` into local ``path`` atomically: temp file, fsync, ``os.replace``, fsync the directory."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = layout.tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(directory)


def write_fs_atomic(fs: Any, table: pa.Table, path: str) -> None:
    """Write ``table`` through a ``pyarrow.fs`` filesystem, atomically (see :func:`put_bytes`)."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    put_bytes(fs, path, buf.getvalue().to_pybytes())


def put_bytes(fs: Any, path: str, data: bytes) -> None:
    """``data`` as the file ``path`` of a ``pyarrow.fs`` filesystem, all or nothing: on an object store one
    put of the whole object (it appears complete or not at all; a temporary object moved into place would be
    a copy, and would leave a directory marker behind); elsewhere a temporary file, then ``fs.move``."""
    if fs.type_name in OBJECT_STORES:
        with fs.open_output_stream(path) as stream:
            stream.write(data)
        return
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.create_dir(parent, recursive=True)
    tmp = layout.tmp_name(path)
    try:
        with fs.open_output_stream(tmp) as stream:
            stream.write(data)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except Exception:
            pass
        raise


def write_bytes_atomic(out: PathLike, rel: tuple[str, ...], data: bytes) -> str:
    """Write ``data`` to ``out``/``rel`` (a local directory or a ``pyarrow.fs`` URI) atomically: locally a
    temporary file, then renamed; through a filesystem, :func:`put_bytes`. Returns the path written."""
    fs, root = layout.resolve(out)
    if fs is None:
        path = os.path.join(root, *rel)
        _local_atomic(path, lambda fh: fh.write(data))
        return path
    path = layout.join(root, *rel, remote=True)
    put_bytes(fs, path, data)
    return path


OBJECT_STORES = ("s3", "gcs")  # whole-object puts are atomic there; there are no directories to create


def remove_file(out: PathLike, rel: tuple[str, ...]) -> None:
    """Delete ``out``/``rel`` (a local directory or a ``pyarrow.fs`` URI) if it exists."""
    fs, root = layout.resolve(out)
    if fs is None:
        _remove_quietly(os.path.join(root, *rel))
        return
    try:
        fs.delete_file(layout.join(root, *rel, remote=True))
    except FileNotFoundError:
        pass


def read_file_bytes(path: PathLike) -> bytes:
    """The bytes of the file ``path``: a local path or a ``pyarrow.fs`` URI (``s3://bucket/key``).
    ConfigError("ticket", ...) when it cannot be read."""
    fs, root = layout.resolve(path)
    try:
        if fs is None:
            with open(root, "rb") as fh:
                return fh.read()
        with fs.open_input_stream(root) as stream:
            return stream.read()
    except FileNotFoundError:
        raise ConfigError("ticket", f"no such file {os.fspath(path)}") from None
    except OSError as e:
        raise ConfigError("ticket", f"cannot read {os.fspath(path)}: {str(e).splitlines()[0]}") from None


def read_bytes(out: PathLike, rel: tuple[str, ...]) -> Optional[bytes]:
    """The bytes of ``out``/``rel``, or None when there is no such file (or it cannot be read)."""
    try:
        return read_file_bytes(layout.path_at(out, *rel))
    except ConfigError:
        return None


def check_writable(out: PathLike, filesystem: Any = None) -> None:
    """Raise ``ConfigError("out", "<dir> is not writable: <reason>")`` unless files can be created in ``out``.

    Probes with a temporary file that is removed again; missing directories are created for the probe and
    removed afterwards, so nothing is left behind either way.
    """
    fs, root = layout.resolve(out, filesystem)
    shown = os.fspath(out)
    try:
        if fs is None:
            _probe_local(root)
        else:
            _probe_fs(fs, root)
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        where = f" ({e.filename})" if getattr(e, "filename", None) and e.filename != root else ""
        raise ConfigError("out", f"{shown} is not writable: {reason}{where}") from e


def _probe_local(root: str) -> None:
    root = os.path.abspath(root)
    existing, missing = root, []
    while not os.path.exists(existing):
        existing, tail = os.path.split(existing)
        missing.append(tail)
    if not os.path.isdir(existing):
        raise NotADirectoryError(20, "Not a directory", existing)
    created = []
    try:
        for name in reversed(missing):
            d = os.path.join(created[-1] if created else existing, name)
            os.mkdir(d)
            created.append(d)
        probe = layout.tmp_name(os.path.join(root, ".colt-ray-write-probe"))
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.remove(probe)
    finally:
        for d in reversed(created):
            try:
                os.rmdir(d)
            except OSError:
                pass


def _probe_fs(fs: Any, root: str) -> None:
    probe = layout.tmp_name(layout.join(root, ".colt-ray-write-probe", remote=True))
    try:
        with fs.open_output_stream(probe) as stream:
            stream.write(b"")
        fs.delete_file(probe)
    except OSError:
        raise
    except Exception as e:  # pyarrow may raise non-OSError types for remote failures
        raise OSError(str(e)) from e


def _own(rows: list[dict[str, Any]], run_id: str, cycle: int, table: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        row = dict(row)
        if row.setdefault("run_id", run_id) != run_id or row.setdefault("cycle", cycle) != cycle:
            raise ValueError(f"{table} row for ({row['run_id']}, {row['cycle']}) passed as ({run_id}, {cycle})")
        out.append(row)
    return out


def _check_status(status: Optional[str], allowed: tuple[str, ...], table: str) -> None:
    if status is not None and status not in allowed:
        raise ValueError(f"{table}: status {status!r} is not one of {', '.join(allowed)}")


def _colt_ray_version() -> str:
    from colt_ray import __version__

    return __version__


def default_hostname() -> str:
    """This machine's host name (for the RUNS ``hostname`` column)."""
    return socket.gethostname()


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
