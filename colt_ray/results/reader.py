"""Load every results table under a directory: one run's ``--out``, a sweep directory, or any tree of them.

The lister (:mod:`colt_ray.results.listing`) takes the files of the table folders ``runs``, ``cycles`` and
``layers`` and every ``trials.parquet``, never looking into ``tickets/``, ``tune/`` or ``report/``;
temporary files of killed writers (``*.tmp-*``) are not results. Each table is then read as one
``pyarrow.dataset`` over its files (parallel reads, only the columns asked for), compacted files and parts
alike. A row whose key appears in more than one file is kept once: the part's over a compacted file's, a
later compaction's over an earlier one's, else the last file in path order
(:func:`colt_ray.results.layout.source_rank`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from colt_ray.core.errors import ConfigError, one_line
from colt_ray.results import layout, schema
from colt_ray.results.layout import PathLike
from colt_ray.results.listing import FileEntry, list_results

KEYS = {
    "runs": ["run_id"],
    "cycles": ["run_id", "cycle", "shard"],
    "layers": ["run_id", "cycle", "layer"],
    "trials": ["sweep", "trial_id"],
}
SORT = {**KEYS, "layers": ["run_id", "cycle"]}  # layers keep their written (model) order
_PANDAS_TYPES = {
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


@dataclass
class Results:
    """Every results table under ``root`` as pandas DataFrames (empty, with all columns, when absent).

    Integer and bool columns use pandas' nullable dtypes (``Int64``, ``Int32``, ``boolean``): null stays
    ``<NA>``. Timestamps are ``datetime64[us, UTC]``; list columns hold arrays.
    """

    root: str
    runs: pd.DataFrame
    cycles: pd.DataFrame
    layers: pd.DataFrame
    trials: pd.DataFrame
    files: list[str] = field(default_factory=list)

    def tickets(self) -> pd.DataFrame:
        """The merged ticket rows of CYCLES (``shard`` null), one per (run, cycle)."""
        return self.cycles[self.cycles["shard"].isna()].reset_index(drop=True)

    def trials_config(self) -> pd.DataFrame:
        """TRIALS with ``config_json`` expanded into one column per config key (see :func:`expand_config`)."""
        return expand_config(self.trials)


def load_results(path: PathLike, filesystem: Any = None, columns: Optional[dict[str, Sequence[str]]] = None) -> Results:
    """Read every results table under ``path`` (a directory, local or ``pyarrow.fs`` URI).

    ``columns``: per table, the columns to read (the keys are always read); a table not named is read whole.
    Raises ``ConfigError("results", ...)`` when ``path`` is missing, not a directory, empty, holds no
    ``runs/*.parquet``, or holds a Parquet file that cannot be read (the message names the file).
    """
    tables, files = load_tables(path, filesystem, columns)
    frames = {name: _to_pandas(t, SORT[name]) for name, t in tables.items()}
    return Results(root=os.fspath(path), files=files, **frames)


def load_tables(
    path: PathLike, filesystem: Any = None, columns: Optional[dict[str, Sequence[str]]] = None
) -> tuple[dict[str, pa.Table], list[str]]:
    """``({"runs"|"cycles"|"layers"|"trials": pyarrow Table}, files read)``; errors as :func:`load_results`.
    Every table has one row per key (see the module's docstring), in no particular order."""
    fs, by_kind = table_files(path, filesystem)
    columns = columns or {}
    tables = {kind: read_table(fs, entries, kind, columns.get(kind)) for kind, entries in by_kind.items()}
    return tables, sorted(e.path for entries in by_kind.values() for e in entries)


def table_files(path: PathLike, filesystem: Any = None) -> tuple[Optional[Any], dict[str, list[FileEntry]]]:
    """``(filesystem or None, {table: its files in source order})``; ConfigError as :func:`load_results`."""
    fs, found = list_results(path, filesystem)
    by_kind: dict[str, list[FileEntry]] = {k: [] for k in schema.TABLES}
    for entry in found:
        if entry.kind:
            by_kind[entry.kind].append(entry)
    if not by_kind["runs"]:
        raise ConfigError("results", f"{os.fspath(path)} holds no colt_ray results (no runs/*.parquet)")
    for entries in by_kind.values():
        entries.sort(key=lambda e: layout.source_rank(e.path))
    return fs, by_kind


def read_table(fs: Any, entries: Sequence[FileEntry], kind: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """The rows of table ``kind`` in ``entries`` (in source order), one per key (the last source's), with the
    declared columns (those of ``columns`` and the keys, if given): absent ones (files older than a column)
    are nulls, columns this version does not declare are left out."""
    declared = schema.TABLES[kind]
    wanted = _wanted(declared, kind, columns)
    if not entries:
        return schema.empty_table(declared).select(wanted)
    dataset = _dataset(fs, entries, declared)
    try:
        table = dataset.to_table(columns=[*wanted, "__fragment_index", "__batch_index"], fragment_readahead=64)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ConfigError("results", f"{_culprit(fs, entries, e)}: {one_line(e)}") from e
    _check_keys(table, entries, kind)
    return _newest_per_key(table, KEYS[kind]).select(wanted)


def _wanted(declared: pa.Schema, kind: str, columns: Optional[Sequence[str]]) -> list[str]:
    if columns is None:
        return list(declared.names)
    unknown = [c for c in columns if c not in declared.names]
    if unknown:
        raise ValueError(f"{kind} has no column {unknown[0]!r}")
    keep = set(columns) | set(KEYS[kind])
    return [c for c in declared.names if c in keep]


def _dataset(fs: Any, entries: Sequence[FileEntry], declared: pa.Schema) -> ds.Dataset:
    """One dataset over ``entries`` in their order; sizes from the listing, so no file is asked its size."""
    import pyarrow.fs as pafs

    filesystem = fs if fs is not None else pafs.LocalFileSystem()
    fmt = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(pre_buffer=True))
    nullable = pa.schema([f.with_nullable(True) for f in declared])  # absent columns read as nulls
    fragments = [fmt.make_fragment(e.path, filesystem=filesystem, file_size=e.size) for e in entries]
    return ds.FileSystemDataset(fragments, nullable, fmt, filesystem)


def _culprit(fs: Any, entries: Sequence[FileEntry], error: Exception) -> str:
    """The file a dataset error came from (named in Arrow's message, else found by opening each), as
    ``<path> is not a readable Parquet file`` or ``<kind> files have incompatible schemas``."""
    text = str(error)
    named = [e.path for e in entries if e.path in text]
    if named:
        return f"{named[0]} is not a readable Parquet file"
    import pyarrow.parquet as pq

    for e in entries:
        try:
            pq.read_metadata(e.path, filesystem=fs)
        except (pa.ArrowException, OSError, ValueError):
            return f"{e.path} is not a readable Parquet file"
    return f"{entries[0].kind} files have incompatible schemas"


def _check_keys(table: pa.Table, entries: Sequence[FileEntry], kind: str) -> None:
    """A file without a key column is not a results file of ``kind``: its rows would read as null keys."""
    for key in KEYS[kind]:
        if kind == "cycles" and key == "shard":  # null: the merged ticket row
            continue
        nulls = table.column(key).is_null()
        if pc.any(nulls).as_py():
            fragment = pc.min(pc.filter(table.column("__fragment_index"), nulls)).as_py()
            raise ConfigError("results", f"{entries[fragment].path} is not a colt_ray {kind} file (no column {key!r})")


def _newest_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    """One row per key: the one from the latest source (then the latest in that file), in source order."""
    if table.num_rows == 0:
        return table
    order = pc.sort_indices(table, [("__fragment_index", "ascending"), ("__batch_index", "ascending")])
    table = table.take(order)
    frame = table.select(keys).to_pandas()
    last = ~frame.duplicated(subset=keys, keep="last").to_numpy()
    return table.filter(pa.array(last))


def expand_config(trials: pd.DataFrame) -> pd.DataFrame:
    """Return ``trials`` plus one column per key of its ``config_json`` (a key that clashes with an
    existing column gets a ``config_`` prefix). Rows with null/empty JSON get nulls."""
    configs = [json.loads(s) if isinstance(s, str) and s else {} for s in trials.get("config_json", [])]
    expanded = pd.DataFrame(configs, index=trials.index)
    expanded.columns = [f"config_{c}" if c in trials.columns else c for c in expanded.columns]
    return pd.concat([trials, expanded], axis=1)


def _to_pandas(table: pa.Table, sort: list[str]) -> pd.DataFrame:
    df = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    if len(df):  # one row per key already (read_table)
        df = df.sort_values(sort, kind="stable", na_position="first").reset_index(drop=True)
    return df


def describe(results: Results) -> str:
    """One line: how many runs, cycle rows, layer rows and trials were loaded."""
    r = results
    return f"{len(r.runs)} runs, {len(r.cycles)} cycle rows, {len(r.layers)} layer rows, {len(r.trials)} trials"
