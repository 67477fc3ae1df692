"""The four results tables, declared once: RUNS, CYCLES, LAYERS, TRIALS (pyarrow schemas).

Rows arrive as plain dicts; :func:`to_table` builds a table with the declared schema and refuses a key that is
not a column (schema drift) or a missing/None value in a non-nullable column. The config part of RUNS is
built from ``RunConfig``'s dataclass fields, so every flat config field has its own typed column.
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, Optional

import pyarrow as pa

from colt_ray.core.config import RunConfig

SCHEMA_VERSION = 1

RUN_STATUSES = ("running", "completed", "failed", "stopped")
TRIAL_STATUSES = ("completed", "stopped_early", "failed", "running")

UTC_US = pa.timestamp("us", tz="UTC")
_SCALARS = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _f(name: str, typ: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


def _arrow_type(hint: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for a config field's type hint."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _arrow_type(inner[0])[0], True
    if typing.get_origin(hint) is tuple and args and args[0] in _SCALARS:
        return pa.list_(_SCALARS[args[0]]), False
    if hint in _SCALARS:
        return _SCALARS[hint], False
    raise TypeError(f"config type {hint!r} has no Parquet column type; extend colt_ray.results.schema")


def config_fields() -> list[pa.Field]:
    """One arrow field per flat ``RunConfig`` field, in ``to_flat()`` order, typed from the dataclass hints."""
    out = []
    for sec in fields(RunConfig):
        cls = sec.default_factory  # type: ignore[misc]
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            typ, nullable = _arrow_type(hints[f.name])
            out.append(_f(f.name, typ, nullable))
    return out


CYCLES = pa.schema(
    [
        _f("run_id", pa.string()),
        _f("cycle", pa.int32()),
        _f("shard", pa.int32(), True),  # null = the merged ticket row
        _f("sparsity", pa.float64()),  # over the prune groups (what target_sparsity means)
        _f("sparsity_all", pa.float64(), True),  # over every parameter of the retrained ticket (skip paths too)
        # over the Linear, Conv and BatchNorm weights of the retrained ticket: the COLT paper's "prune rate"
        _f("sparsity_weights", pa.float64(), True),
        _f("conv_sparsity", pa.float64(), True),
        _f("kept_weights", pa.int64()),
        _f("prunable_weights", pa.int64()),
        _f("evaluated", pa.bool_(), True),  # False: the eval policy skipped this ticket; its accuracy columns are null
        _f("acc_best", pa.float64(), True),  # null when the ticket was not trained (see eval_tickets)
        _f("acc_final", pa.float64(), True),
        _f("val_acc_best", pa.float64(), True),  # best validation accuracy over epochs (with val_fraction > 0)
        _f("test_acc_at_best_val", pa.float64(), True),  # test accuracy at that epoch: report it when val selects
        _f("loss", pa.float64(), True),
        _f("overlap", pa.float64(), True),
        _f("sample_epochs", pa.int64()),
        # the part of sample_epochs that proposed the next mask, where the row holds more than that training (an
        # IMP level whose ticket a tweak retrains apart: the plain level training; null: all of sample_epochs)
        _f("mask_sample_epochs", pa.int64(), True),
        # the part of sample_epochs that trained the run's distillation teacher, in the one row that carries it
        # (the first distilled retraining that needed it; null: none); every later distilled ticket needs it too
        _f("teacher_sample_epochs", pa.int64(), True),
        _f("wall_seconds", pa.float64()),
        _f("cpu_seconds", pa.float64(), True),  # CPU time of the training's process (null: not trained)
        _f("finished_at", UTC_US),
    ],
    metadata={"colt_ray.table": "cycles", "colt_ray.schema_version": str(SCHEMA_VERSION)},
)

LAYERS = pa.schema(
    [
        _f("run_id", pa.string()),
        _f("cycle", pa.int32()),
        _f("layer", pa.string()),
        _f("group", pa.string()),
        _f("numel", pa.int64()),
        _f("kept", pa.int64()),
        _f("density", pa.float64()),
        _f("overlap", pa.float64(), True),
    ],
    metadata={"colt_ray.table": "layers", "colt_ray.schema_version": str(SCHEMA_VERSION)},
)

FINAL_FIELDS = [
    _f("final_sparsity", pa.float64(), True),
    _f("final_sparsity_all", pa.float64(), True),
    _f("final_acc_best", pa.float64(), True),
    _f("final_acc_final", pa.float64(), True),
    _f("reported_cycle", pa.int64(), True),  # the cycle of the reported ticket (max_acc_drop: sparsest within D)
    _f("cycles_done", pa.int64(), True),
    _f("sample_epochs", pa.int64(), True),
    _f("wall_seconds", pa.float64(), True),
]

RUN_EXTRA_FIELDS = [
    _f("status", pa.string()),
    _f("error", pa.string(), True),
    _f("started_at", UTC_US),
    _f("finished_at", UTC_US, True),
    _f("num_classes", pa.int64(), True),
    _f("dense_acc", pa.float64(), True),
    *FINAL_FIELDS,
    # the reported ticket's search on k + 1 workers: per round the slowest shard (IMP: its level's training),
    # summed over the rounds before it, plus the ticket's own training (docs/results.md); and those rounds
    _f("critical_path_seconds", pa.float64(), True),
    _f("rounds", pa.int64(), True),
    _f("colt_ray_version", pa.string()),
    _f("torch_version", pa.string(), True),
    _f("python_version", pa.string()),
    _f("ray_version", pa.string(), True),
    _f("hostname", pa.string(), True),
    # which data the run read, for a dataset loaded from a file or folder (null: an embedded dataset): the
    # file's (or folder's) name and a fingerprint (runner.data_identity), so the report keeps apart two files
    # of one dataset kind
    _f("data_file", pa.string(), True),
    _f("data_fingerprint", pa.string(), True),
    _f("sweep", pa.string(), True),
    _f("trial_id", pa.string(), True),
]

RUNS = pa.schema(
    [_f("run_id", pa.string()), _f("schema_version", pa.int32()), *config_fields(), *RUN_EXTRA_FIELDS],
    metadata={"colt_ray.table": "runs", "colt_ray.schema_version": str(SCHEMA_VERSION)},
)

TRIALS = pa.schema(
    [
        _f("sweep", pa.string()),
        _f("trial_id", pa.string()),
        _f("run_id", pa.string(), True),  # null if the trial failed before its run got an id
        _f("status", pa.string()),
        _f("stopped_early", pa.bool_()),
        _f("config_json", pa.string()),
        *FINAL_FIELDS,
        # the first ticket at or past the target sparsity (null without a target or before one got there)
        _f("val_acc_at_target", pa.float64(), True),
        _f("test_acc_at_target", pa.float64(), True),
        _f("rounds_at_target", pa.int64(), True),
        _f("sample_epochs_at_target", pa.int64(), True),
        _f("wall_at_target", pa.float64(), True),
        # where the trial's time went besides training (sweep efficiency)
        _f("prepare_seconds", pa.float64(), True),
        _f("checkpoint_seconds", pa.float64(), True),
        _f("train_cpu_seconds", pa.float64(), True),  # CPU seconds of the trial's training rows
        _f("objective", pa.float64(), True),
        _f("pareto", pa.bool_(), True),
    ],
    metadata={"colt_ray.table": "trials", "colt_ray.schema_version": str(SCHEMA_VERSION)},
)

TABLES = {"runs": RUNS, "cycles": CYCLES, "layers": LAYERS, "trials": TRIALS}

for _name, _schema in TABLES.items():
    assert len(set(_schema.names)) == len(_schema.names), f"duplicate column in {_name}"


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema, table: Optional[str] = None) -> pa.Table:
    """Build a table of ``schema`` from dict rows.

    Raises ValueError naming the column for an unknown key, a missing or None non-nullable value, or a
    value of the wrong type. Missing nullable keys become null. Timestamps may be datetimes (naive = UTC),
    ISO strings or epoch seconds.
    """
    rows = list(rows)
    name = table or schema.metadata.get(b"colt_ray.table", b"table").decode()
    known = set(schema.names)
    required = [f.name for f in schema if not f.nullable]
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - known)
        if unknown:
            raise ValueError(f"{name} row {i}: unknown column {unknown[0]!r} (not in the {name} schema)")
        missing = [c for c in required if row.get(c) is None]
        if missing:
            raise ValueError(f"{name} row {i}: missing value for non-nullable column {missing[0]!r}")
    rows = [_normalise(row, schema) for row in rows]
    try:
        return pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
        raise ValueError(_bad_column(rows, schema, name) or f"{name}: {e}") from e


def empty_table(schema: pa.Schema) -> pa.Table:
    """A zero-row table of ``schema``."""
    return schema.empty_table()


def _normalise(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    out = dict(row)
    for f in schema:
        v = out.get(f.name)
        if v is not None and pa.types.is_timestamp(f.type):
            out[f.name] = _timestamp(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
    return out


def _timestamp(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return dt.datetime.fromtimestamp(v, tz=dt.timezone.utc)
    if isinstance(v, str):
        t = dt.datetime.fromisoformat(v)
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    return v


def _bad_column(rows: list[dict[str, Any]], schema: pa.Schema, name: str) -> Optional[str]:
    for f in schema:
        values = [r.get(f.name) for r in rows]
        try:
            pa.array(values, type=f.type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
            return f"{name}: column {f.name!r} ({f.type}): {' '.join(str(e).split())}"
    return None
