"""What the report names and shares per recipe (pandas only): a readable label per run, and the dense
reference a run without its own dense evaluation takes from a run of the same recipe.

* :func:`recipe_labels` - ``"colt k=2 prune_rate=0.2"``: the method and the settings that tell its runs
  apart from the others in the report (never a run-id hash; seeds and execution settings left out).
* :func:`borrow_dense` - COLT under ``eval_tickets: final`` (or ``every:N``) trains no dense ticket. The dense
  ticket of a recipe is the same training for every method (theta_0 with the full-class head, the full
  training set, the recipe: ``docs/algorithms.md``), so such a run takes the dense figures of the runs with
  the same data, model, training recipe and seed (else the mean over the recipe's seeds), and every method
  is then held to the same best-ticket rule.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Optional

import pandas as pd

from colt_ray.core.config import flat_field_owners, setting_of

ALWAYS = ("shards", "prune_rate")  # named even when every run shares them: what a reader compares first
ONLY = {"COLT": "colt", "IMP": "imp"}  # a setting whose help starts "COLT..." is read by COLT alone
SHORT = {"shards": "k"}
# what the dense ticket's training depends on: the data, the model, the training recipe, its retraining
DENSE_SECTIONS = ("data", "model", "recipe", "retrain", "jackpot")
DENSE = ("dense_acc", "dense_select", "dense_report")
SOURCES = ("own", "same_recipe_seed", "same_recipe")


def recipe_labels(runs: pd.DataFrame) -> pd.Series:
    """A label per run (aligned with ``runs``): its method, k and prune rate (COLT, IMP), and each other
    setting its method reads that differs between the runs reading it (a COLT-only setting between COLT
    runs); seeds, execution settings and run ids never."""
    reader = method_settings()
    cols = [c for c in runs.columns if c in reader and c not in ("seed", "dataset", "arch", "method")]
    varies = {c for c in cols if reader[c] is None and _nunique(runs[c]) > 1}
    labels = pd.Series("", index=runs.index, dtype=object)
    for method, same in runs.groupby("method", sort=False):  # per method, not per run: a sweep has 1,000s
        shown = [
            c for c in cols
            if reader[c] in (None, method)
            and ((c in ALWAYS and method in ONLY.values()) or c in varies or (reader[c] and _nunique(same[c]) > 1))
        ]  # fmt: skip
        shown.sort(key=lambda c: ALWAYS.index(c) if c in ALWAYS else len(ALWAYS))  # k, prune rate first
        texts = [same[c].map(lambda v, c=c: "" if _missing(v) else f" {SHORT.get(c, c)}={_text(v)}") for c in shown]
        labels[same.index] = [str(method) + "".join(parts) for parts in zip(*texts)] if texts else str(method)
    return labels


def method_settings() -> dict[str, Optional[str]]:
    """Every configuration setting but the execution ones, with the method that alone reads it (its help
    starts "COLT" or "IMP") or None (every method)."""
    out = {}
    for name, section in flat_field_owners().items():
        if section != "resources":
            head = setting_of(name).help.split(":")[0].split(" ")[0]
            out[name] = ONLY.get(head)
    return out


def dense_keys(runs: pd.DataFrame, with_seed: bool) -> pd.Series:
    """A hash per run (aligned with ``runs``) of what its dense ticket's training depends on
    (``DENSE_SECTIONS``, the data file's fingerprint, and the seed if ``with_seed``)."""
    owners = flat_field_owners()
    cols = [c for c in runs.columns if owners.get(c) in DENSE_SECTIONS or c in ("data_file", "data_fingerprint")]
    cols += ["seed"] if with_seed and "seed" in runs else []
    keys = (json.dumps([_plain(v) for v in row], default=str) for row in runs[cols].itertuples(index=False))
    return pd.Series([hashlib.sha256(k.encode()).hexdigest()[:12] for k in keys], index=runs.index, dtype=object)


def borrow_dense(pts: pd.DataFrame, runs: pd.DataFrame) -> None:
    """Fill ``pts``' null dense figures (``DENSE``) of a run without a dense evaluation from the runs of the
    same recipe and seed, else the mean over the recipe's runs; ``dense_source`` says which (``SOURCES``;
    null: no run of the recipe has one)."""
    per_run = pts.drop_duplicates("run_id").set_index("run_id")[list(DENSE)].astype("float64")
    info = runs.drop_duplicates("run_id").set_index("run_id")
    per_run["seeded"] = dense_keys(info, with_seed=True).reindex(per_run.index)
    per_run["recipe"] = dense_keys(info, with_seed=False).reindex(per_run.index)
    source = pd.Series(None, index=per_run.index, dtype=object).where(per_run["dense_select"].isna(), "own")
    for key, name in (("seeded", SOURCES[1]), ("recipe", SOURCES[2])):
        missing = per_run["dense_select"].isna()
        for col in DENSE:
            donors = per_run[col].where(source == "own")  # only own evaluations are lent, never borrowed ones
            per_run[col] = per_run[col].fillna(donors.groupby(per_run[key]).transform("mean"))
        source = source.where(~(missing & per_run["dense_select"].notna()), name)
    for col in DENSE:
        pts[col] = pts[col].fillna(pts["run_id"].map(per_run[col]))
    pts["dense_source"] = pts["run_id"].map(source)


def _nunique(s: pd.Series) -> int:
    return len({json.dumps(_plain(v), default=str) for v in s})


def _plain(v):
    from colt_ray.results.tables import plain

    return plain(v)


def _missing(v) -> bool:
    v = _plain(v)
    return v is None or v == "" or v == []


def _text(v) -> str:
    v = _plain(v)
    if isinstance(v, float):
        return f"{v:g}" if math.isfinite(v) else str(v)
    if isinstance(v, list):
        return "+".join(map(str, v))
    return str(v)
