"""Compaction: the many small parts of each results table become a few large Parquet files.

The parts (one per run, one per (run, cycle)) are the write-ahead log: each lands once, atomically. Readers
want the opposite: few large files. ``compact`` merges, per results directory and table, every part and every
earlier compacted file into generation ``g`` (``<table>/compacted-g<g>-<i>.parquet``, sorted by key, row
groups of ``ROW_GROUP_ROWS``), and only once all of them are written removes what it merged:

* killed while writing, the directory holds the old files plus some of generation ``g``, whose rows equal
  rows still there (the reader keeps one per key: a part's over a compacted file's, a later generation's
  over an earlier one's), so every row reads exactly once; the next run writes generation ``g + 1``;
* killed while removing, the leftovers are rows that generation ``g`` holds too;
* a part rewritten after it was read (a run that is still going) is not removed: it is newer than what the
  compacted file holds, and wins.

Each file is written atomically (a local temporary file renamed; on an object store one whole-object put).
Not partitioned: a compacted table of a 6,000-run sweep is one file of tens of MB, which every reader takes
with one glob, and a partition per method would only multiply the requests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from colt_ray.results import layout, schema
from colt_ray.results.listing import FileEntry
from colt_ray.results.reader import SORT, read_table, table_files
from colt_ray.results.writer import put_bytes, write_local_atomic

ROW_GROUP_ROWS = 64 * 1024  # a few MB per row group: whole row groups are the unit a reader skips or fetches
FILE_ROWS = 4 * 1024 * 1024  # a new file past this many rows (some hundred MB): bounded memory per file
# runs last: a compaction that drops runs (orphans.drop_orphans) and is killed leaves their runs rows, by which
# the next attempt finds them again; trials.parquet is one file already
TABLES = (layout.CYCLES_DIR, layout.LAYERS_DIR, layout.RUNS_DIR)


@dataclass
class Compaction:
    """What one ``compact`` did: per ``<results dir>/<table>``, (files merged, rows, files written)."""

    tables: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    kept: int = 0  # parts rewritten while compacting, left in place (newer than the compacted rows)

    def summary(self) -> str:
        """``5,400 files into 3 (runs, cycles, layers)``, or ``nothing to compact``."""
        if not self.tables:
            return "nothing to compact"
        merged = sum(n for n, _, _ in self.tables.values())
        written = sum(w for _, _, w in self.tables.values())
        kinds = sorted({where.rsplit("/", 1)[-1] for where in self.tables})
        return f"{merged:,} files into {written} ({', '.join(kinds)})"

    def lines(self) -> list[str]:
        if not self.tables:
            return ["nothing to compact: every table is already one compaction"]
        out = [f"{where}: {n} files -> {w} ({rows} rows)" for where, (n, rows, w) in sorted(self.tables.items())]
        if self.kept:
            out.append(f"{self.kept} parts were rewritten while compacting and stay beside the compacted files")
        return out


def compact(
    path: layout.PathLike,
    filesystem: Any = None,
    *,
    drop_runs: frozenset[str] = frozenset(),
    stop_after: Optional[Callable[[str], None]] = None,
) -> Compaction:
    """Compact every results table under ``path`` (a local directory or a ``pyarrow.fs`` URI; a run's
    ``--out``, a sweep directory, or a tree of them). Idempotent; safe to interrupt at any point.
    ``drop_runs``: runs whose rows the new generation leaves out (a resumed sweep's orphans), compacted
    tables rewritten for them. ``stop_after(step)``: called after each file written and each file removed
    (tests kill there). ConfigError("results", ...) as ``load_results`` when there are no results."""
    fs, by_kind = table_files(path, filesystem)
    done = Compaction()
    hook = stop_after or (lambda step: None)
    for kind in TABLES:
        for directory, entries in _by_directory(by_kind[kind]).items():
            if _compact_already(entries) and not drop_runs:
                continue
            written, rows = _write_generation(fs, directory, kind, entries, hook, drop_runs)
            done.kept += _remove_merged(fs, entries, written, hook)
            done.tables[f"{directory}/{kind}"] = (len(entries), rows, len(written))
    return done


def _by_directory(entries: list[FileEntry]) -> dict[str, list[FileEntry]]:
    """The files of one table grouped by their results directory (the parent of the table folder)."""
    out: dict[str, list[FileEntry]] = {}
    for e in entries:
        out.setdefault(os.path.dirname(os.path.dirname(e.path)), []).append(e)
    return out


def _compact_already(entries: list[FileEntry]) -> bool:
    """No parts, and one generation of compacted files: nothing to merge."""
    generations = {layout.compacted_generation(e.path) for e in entries}
    return None not in generations and len(generations) <= 1


def _write_generation(
    fs: Any, directory: str, kind: str, entries: list[FileEntry], hook: Callable[[str], None], drop: frozenset[str]
) -> tuple[list[str], int]:
    """Write the next generation of ``kind`` in ``directory`` from ``entries`` without the rows of the runs
    ``drop``; (paths written, rows)."""
    generation = 1 + max((layout.compacted_generation(e.path) or 0 for e in entries), default=0)
    table = read_table(fs, entries, kind)
    if drop:
        table = table.filter(pc.invert(pc.is_in(table.column("run_id"), pa.array(sorted(drop), pa.string()))))
    order = pc.sort_indices(table, [(k, "ascending", "at_start") for k in SORT[kind]])
    table = table.take(order)
    table = table.cast(schema.TABLES[kind])  # the declared schema, nullability and metadata included
    written = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), FILE_ROWS)):
        path = layout.join(directory, kind, layout.compacted_name(generation, i), remote=fs is not None)
        _write(fs, table.slice(start, FILE_ROWS), path)
        written.append(path)
        hook(f"wrote {path}")
    return written, table.num_rows


def _write(fs: Any, table: pa.Table, path: str) -> None:
    options = {"row_group_size": ROW_GROUP_ROWS, "compression": "zstd"}
    if fs is None:
        write_local_atomic(table, path, **options)
        return
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, **options)
    put_bytes(fs, path, buf.getvalue().to_pybytes())


def _remove_merged(fs: Any, entries: list[FileEntry], written: list[str], hook: Callable[[str], None]) -> int:
    """Remove the files merged into ``written``; returns how many parts were kept (rewritten since read)."""
    kept = 0
    for e in entries:
        if e.path in written:
            continue
        if layout.compacted_generation(e.path) is not None:
            _delete(fs, e.path)
        elif not _remove_if_unchanged(fs, e):
            kept += 1
        hook(f"removed {e.path}")
    return kept


def _delete(fs: Any, path: str) -> None:
    try:
        os.remove(path) if fs is None else fs.delete_file(path)
    except FileNotFoundError:
        pass


def _remove_if_unchanged(fs: Any, entry: FileEntry) -> bool:
    """Remove a part if it is still the version that was read (same size and mtime); False if it was kept.

    Locally without a race: the part is first renamed aside, so a writer replacing it meanwhile lands a new
    file under its name; what was renamed aside is checked, and put back (if no newer file is there) when it
    is not the version read. On an object store the check and the delete are two requests."""
    if fs is None:
        aside = layout.tmp_name(entry.path)
        try:
            os.rename(entry.path, aside)
        except FileNotFoundError:
            return True
        st = os.stat(aside)
        same = (st.st_size, st.st_mtime_ns) == (entry.size, entry.mtime_ns)
        if not same:
            try:
                os.link(aside, entry.path)
            except FileExistsError:  # rewritten again meanwhile: the newest is in place
                pass
        os.remove(aside)
        return same
    info = fs.get_file_info(entry.path)
    if info.type != pafs.FileType.File:
        return True
    if (info.size, info.mtime_ns) != (entry.size, entry.mtime_ns):
        return False
    fs.delete_file(entry.path)
    return True
