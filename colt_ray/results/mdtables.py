"""Report tables as Markdown a person can read: the columns a reader compares, labels shared by every row
said once above the table, a table wider than ``MAX_COLUMNS`` split in two (its key columns in both), and
integers (cycles, runs, sample-epochs) printed as integers. The CSV report keeps every column as it is.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

MAX_COLUMNS = 12
# the Markdown best-ticket table: the ticket and its rule, then what selects, what is reported and their dense
# references (a split falls between the two); the rest is in the CSV
SHOWN = {
    "best_tickets": [
        "method", "dataset", "arch", "recipe", "run_id", "cycle", "sparsity", "rule", "selected_by", "dense_source",
        "select_acc", "dense_select", "acc_drop", "report_acc", "dense_report", "search_sample_epochs",
    ],
}  # fmt: skip
# the column that names a row, kept even when every row shares it
NAMES = {"best_tickets": "method", "pareto_front": "method", "layer_density": "layer", "at_target": "method"}
# columns that identify a row: repeated in each part of a split table
KEYS = {
    "best_tickets": ["method", "dataset", "arch"],
    "matched_sparsity": ["dataset", "arch", "sparsity"],
    "pareto_front": ["dataset", "arch", "method", "run_id"],
    "layer_density": ["method", "dataset", "arch", "layer"],
    "at_target": ["method", "dataset", "arch", "config_id"],
}
_WHOLE = {
    "cycle",
    "n",
    "rounds",
    "colt_rounds",
    "imp_rounds",
    "numel",
    "kept",
    "shards",
    "epochs",
    "cycles",
    "cycles_done",
}


def readable(key: str, df: pd.DataFrame) -> list[str]:
    """Markdown lines for table ``key``: its ``SHOWN`` columns (all where none are named), a label column
    equal in every row (two rows or more) dropped and said once above, then one table, or two parts each
    with the key columns where more than ``MAX_COLUMNS`` remain."""
    out = df[[c for c in SHOWN[key] if c in df]] if key in SHOWN else df
    lines, same = [], _constant_labels(out, NAMES.get(key))
    if same:
        lines += ["In every row: " + ", ".join(f"{c} `{_cell(c, out[c].iloc[0])}`" for c in same) + ".", ""]
        out = out.drop(columns=same)
    if len(out.columns) <= MAX_COLUMNS:
        return lines + [table(out), ""]
    keys = [c for c in out.columns if c in KEYS.get(key, [])][: MAX_COLUMNS // 2]
    rest = [c for c in out.columns if c not in keys]
    width = math.ceil(len(rest) / math.ceil(len(rest) / (MAX_COLUMNS - len(keys))))  # parts of even width
    parts = [rest[i : i + width] for i in range(0, len(rest), width)]
    for i, cols in enumerate(parts):
        lines += ([f"_(continued: {', '.join(keys)} as above)_", ""] if i else []) + [table(out[keys + cols]), ""]
    return lines


def table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (no index): floats to 4 decimals (1 above 100), counts
    (``_WHOLE`` names and ``*_n`` where whole; ``*sample_epochs`` always, rounded) without a decimal point."""
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---:" if _numeric(df[c]) else "---" for c in df.columns) + "|"
    cols = list(df.columns)
    body = ["| " + " | ".join(_cell(c, v) for c, v in zip(cols, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _constant_labels(df: pd.DataFrame, keep: Optional[str]) -> list[str]:
    """Non-numeric columns (names, rules, ids) with one value in every row, where the table has two rows or more."""
    if len(df) < 2:
        return []
    return [
        c for c in df.columns
        if c != keep and not _numeric(df[c]) and df[c].astype(str).nunique(dropna=False) == 1
    ]  # fmt: skip


def _numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _whole(name: str) -> bool:
    return name in _WHOLE or name.endswith("_n") or "sample_epochs" in name


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _cell(name: str, v: Any) -> str:
    if _missing(v):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)) and "sample_epochs" in name:
        return str(round(v))  # a count; a mean or an interpolation's fraction of one is no information
    if isinstance(v, (float, np.floating)) and _whole(name):  # a count, or a mean of counts (rounds)
        return str(round(v)) if abs(v - round(v)) < 1e-9 else f"{v:.1f}"
    if isinstance(v, (float, np.floating)):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4f}"
    return str(v).replace("|", "\\|")
