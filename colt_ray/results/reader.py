"""Load every results table under a directory: one run's ``--out``, a sweep directory, or any tree of them.

The reader walks the tree and takes ``*.parquet`` files whose parent directory is ``runs``, ``cycles`` or
``layers``, plus every ``trials.parquet``; temporary files of killed writers (``*.tmp-*``) are ignored.
Rows that appear in more than one file (the same run reached through two subtrees) are kept once, the
last file in path order winning.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from colt_ray.core.errors import ConfigError, one_line
from colt_ray.results import layout, schema
from colt_ray.results.layout import PathLike

KEYS = {
    "runs": ["run_id"],
    "cycles": ["run_id", "cycle", "shard"],
    "layers": ["run_id", "cycle", "layer"],
    "trials": ["sweep", "trial_id"],
}
SORT = {**KEYS, "layers": ["run_id", "cycle"]}  # layers keep their written (model) order
_SKIP_DIRS = {layout.TICKETS_DIR, layout.REPORT_DIR}
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


def load_results(path: PathLike, filesystem: Any = None) -> Results:
    """Read every results table under ``path`` (a directory, local or ``pyarrow.fs`` URI).

    Raises ``ConfigError("results", ...)`` when ``path`` is missing, not a directory, empty, holds no
    ``runs/*.parquet``, or holds a Parquet file that cannot be read (the message names the file).
    """
    tables, files = load_tables(path, filesystem)
    frames = {name: _to_pandas(t, KEYS[name], SORT[name]) for name, t in tables.items()}
    return Results(root=os.fspath(path), files=files, **frames)


def load_tables(path: PathLike, filesystem: Any = None) -> tuple[dict[str, pa.Table], list[str]]:
    """``({"runs"|"cycles"|"layers"|"trials": pyarrow Table}, files read)``; errors as :func:`load_results`."""
    fs, root = layout.resolve(path, filesystem)
    shown = os.fspath(path)
    found = _list_files(fs, root, shown)
    by_kind: dict[str, list[str]] = {k: [] for k in schema.TABLES}
    for f in found:
        kind = layout.classify(f)
        if kind:
            by_kind[kind].append(f)
    if not by_kind["runs"]:
        raise ConfigError("results", f"{shown} holds no colt_ray results (no runs/*.parquet)")
    tables = {kind: _read_kind(fs, files, kind) for kind, files in by_kind.items()}
    return tables, sorted(f for files in by_kind.values() for f in files)


def expand_config(trials: pd.DataFrame) -> pd.DataFrame:
    """Return ``trials`` plus one column per key of its ``config_json`` (a key that clashes with an
    existing column gets a ``config_`` prefix). Rows with null/empty JSON get nulls."""
    configs = [json.loads(s) if isinstance(s, str) and s else {} for s in trials.get("config_json", [])]
    expanded = pd.DataFrame(configs, index=trials.index)
    expanded.columns = [f"config_{c}" if c in trials.columns else c for c in expanded.columns]
    return pd.concat([trials, expanded], axis=1)


def _list_files(fs: Any, root: str, shown: str) -> list[str]:
    if fs is None:
        if not os.path.exists(root):
            raise ConfigError("results", f"{shown} does not exist")
        if not os.path.isdir(root):
            raise ConfigError("results", f"{shown} is not a directory")
        files = _walk_local(root)
    else:
        files = _walk_fs(fs, root, shown)
    if not files:
        raise ConfigError("results", f"{shown} is empty")
    return sorted(files)


def _walk_local(root: str) -> list[str]:
    out = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS and not x.startswith("."))
        out.extend(os.path.join(d, n) for n in names)
    return out


def _walk_fs(fs: Any, root: str, shown: str) -> list[str]:
    import pyarrow.fs as pafs

    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError("results", f"{shown} does not exist")
    if info.type != pafs.FileType.Directory:
        raise ConfigError("results", f"{shown} is not a directory")
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return [i.path for i in infos if i.type == pafs.FileType.File and not _skipped(i.path[len(root) :])]


def _skipped(relative: str) -> bool:
    dirs = relative.strip("/").split("/")[:-1]
    return any(d in _SKIP_DIRS or d.startswith(".") for d in dirs)


def _read_kind(fs: Any, files: list[str], kind: str) -> pa.Table:
    declared = schema.TABLES[kind]
    if not files:
        return schema.empty_table(declared)
    tables = [_read_one(fs, f, kind) for f in files]
    tables = [t.replace_schema_metadata(None) for t in tables]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as e:
        raise ConfigError("results", f"{kind} files have incompatible schemas: {one_line(e)}") from e
    return _with_declared_columns(table, declared)


def _read_one(fs: Any, path: str, kind: str) -> pa.Table:
    try:
        table = pq.read_table(path, filesystem=fs)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ConfigError("results", f"{path} is not a readable Parquet file: {one_line(e)}") from e
    missing = [k for k in KEYS[kind] if k not in table.column_names]
    if missing:
        raise ConfigError("results", f"{path} is not a colt_ray {kind} file (no column {missing[0]!r})")
    return table


def _with_declared_columns(table: pa.Table, declared: pa.Schema) -> pa.Table:
    """Add declared columns absent from old files (as nulls), declared ones first, extra ones kept."""
    for f in declared:
        if f.name not in table.column_names:
            table = table.append_column(pa.field(f.name, f.type, True), pa.nulls(len(table), f.type))
    order = declared.names + [c for c in table.column_names if c not in declared.names]
    return table.select(order)


def _to_pandas(table: pa.Table, keys: list[str], sort: list[str]) -> pd.DataFrame:
    df = table.to_pandas(types_mapper=_PANDAS_TYPES.get)
    if len(df):
        df = df.drop_duplicates(subset=keys, keep="last")
        df = df.sort_values(sort, kind="stable", na_position="first").reset_index(drop=True)
    return df


def describe(results: Results) -> str:
    """One line: how many runs, cycle rows, layer rows and trials were loaded."""
    r = results
    return f"{len(r.runs)} runs, {len(r.cycles)} cycle rows, {len(r.layers)} layer rows, {len(r.trials)} trials"
