"""The report's tables, computed from loaded :class:`~colt_ray.results.reader.Results` (pandas + numpy only).

* :func:`ticket_points` - every ticket row (CYCLES rows with ``shard`` null) with its run's method, dataset,
  arch, dense accuracy, and the run's compute up to and including that cycle.
* :func:`best_tickets` - one ticket per (method, dataset, arch) by the rule in ``docs/results.md``.
* :func:`config_ids` / :func:`config_points` - runs that differ only by seed grouped into one configuration,
  their tickets averaged per cycle.
* :func:`matched_sparsity` - COLT vs IMP interpolated at common sparsities, mean ± std over seeds.
* :func:`pareto_points` / :func:`pareto_front` - non-dominated (sparsity, acc_best) points.
* :func:`at_target` - per configuration, the first ticket at or past its target sparsity (mean ± std).
* :func:`best_settings` - each method's best configuration and the ``colt-ray ticket`` line that runs it.
* :func:`layer_density` - the per-layer density of each best ticket.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from colt_ray.core.config import flat_field_owners
from colt_ray.results.recipes import borrow_dense, recipe_labels

TOL = 0.01  # "within 1 point": accuracies are fractions, so one percentage point is 0.01
GRID = (0.5, 0.8, 0.9, 0.95)
GROUP = ["method", "dataset", "arch"]
_EPS = 1e-9

POINT_COLUMNS = [
    "method", "dataset", "arch", "run_id", "cycle", "sparsity", "acc_best", "acc_final", "overlap",
    "dense_acc", "cum_sample_epochs", "search_sample_epochs", "cum_wall_seconds", "sweep", "trial_id",
    "val_acc_best", "test_acc_at_best_val", "select_acc", "report_acc", "dense_select", "selected_by",
    "config_id", "dense_report", "dense_source", "recipe", "critical_path_seconds",
]  # fmt: skip
BEST_COLUMNS = [
    "method", "dataset", "arch", "run_id", "cycle", "sparsity", "acc_best", "acc_final", "dense_acc",
    "acc_drop", "cum_sample_epochs", "search_sample_epochs", "cum_wall_seconds", "rule",
    "selected_by", "select_acc", "dense_select", "report_acc", "dense_report", "dense_source", "recipe",
]  # fmt: skip
# what selects, and what is reported: validation where the run has a split, else (no split) the test set
SELECTION_NOTE = (
    "Selection: a run with a validation split is selected on validation accuracy (`select_acc` = "
    "`val_acc_best`; `dense_select` = its dense ticket's) and reports `report_acc` = `test_acc_at_best_val`; a "
    "run without one (`selected_by` = `acc_best`) is selected and reported on best test accuracy, so its "
    "numbers are optimistic. `acc_best` is always the best test accuracy over epochs."
)
BEST_NOTE = (
    "One rule for every method: the sparsest ticket whose `select_acc` is within 1 point of the dense ticket of "
    "its own recipe (`dense_select`; rule `within_tol`), else the most accurate (`best_acc`). A run that trained "
    "no dense ticket (COLT under `eval_tickets: final`) takes the dense ticket of the runs with the same data, "
    "model, training recipe and seed (`dense_source` `same_recipe_seed`; `same_recipe`: the mean over its "
    "seeds); where a method has none at all, every method of that dataset and arch takes its most accurate "
    "ticket (`best_acc_no_dense`). `report_acc` is the ticket's reported figure (the plots draw it), "
    "`dense_report` its dense ticket's. `colt-ray report --format csv` adds `acc_best`, `acc_final`, "
    "`dense_acc` (best-epoch test accuracies) and the cumulative compute."
)
MATCHED_NOTE = (
    "Runs that differ only by seed form one configuration. Each method's configuration is the one whose "
    "tickets, averaged over its runs, win the best-ticket rule (on `select_acc`); each cell is the mean ± "
    "std over that configuration's runs that reach the sparsity (`n`), of `report_acc` interpolated along each "
    "run. Runs of trials stopped early are left out."
)
AT_TARGET_NOTE = (
    "Runs that stop at a target sparsity: each run's first ticket at or past it. `select_acc` (validation) "
    "chooses the `best` configuration per method; `report_acc` is test accuracy at the best-validation "
    "epoch; `rounds` is the cycle, `sample_epochs` what finding and training that ticket cost, `wall_seconds` "
    "the training wall time with shards in parallel (from the cycles' rows, not the sweep's clock), "
    "`critical_path_seconds` that of the search alone on k + 1 workers (earlier tickets' evaluations beside it)."
)
MATCHED_COLUMNS = [
    "dataset", "arch", "sparsity", "colt_ticket", "colt_acc", "colt_acc_std", "colt_n", "imp_acc", "imp_acc_std",
    "imp_n", "acc_diff", "colt_sample_epochs", "imp_sample_epochs", "compute_ratio", "colt_rounds", "imp_rounds",
    "colt_critical_path_seconds", "imp_critical_path_seconds", "critical_path_ratio", "colt_run_id", "imp_run_id",
]  # fmt: skip
AT_TARGET_COLUMNS = [
    "method", "dataset", "arch", "config_id", "target", "n", "sparsity", "select_acc", "select_acc_std",
    "report_acc", "report_acc_std", "rounds", "sample_epochs", "wall_seconds", "critical_path_seconds", "best",
]  # fmt: skip
SETTINGS_COLUMNS = [
    "dataset", "arch", "method", "config_id", "n", "cycle", "sparsity", "select_acc", "report_acc",
    "report_acc_std", "sample_epochs", "rule", "command",
]  # fmt: skip
PARETO_COLUMNS = [
    "dataset", "arch", "method", "run_id", "cycle", "sparsity", "acc_best", "selected_by", "select_acc", "report_acc",
]  # fmt: skip
LAYER_COLUMNS = [
    "method", "dataset", "arch", "run_id", "cycle", "layer", "group", "numel", "kept", "density", "overlap",
]  # fmt: skip


def ticket_points(runs: pd.DataFrame, cycles: pd.DataFrame) -> pd.DataFrame:
    """Ticket rows joined with their run; ``cum_*`` = the run's compute over all rows of cycles <= this one.

    Per cycle, sample-epochs add up over every row (shards and ticket); wall time is the slowest shard
    (shards run in parallel) plus the ticket row's training. ``dense_acc`` is ``runs.dense_acc``, else the
    run's cycle-0 ticket ``acc_best``; a run without a dense evaluation takes its recipe's
    (``recipes.borrow_dense``, ``dense_source``). ``recipe`` names the run's recipe (``recipes.recipe_labels``).
    """
    if cycles.empty or runs.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    per = _cumulative_compute(cycles)
    tickets = cycles[cycles["shard"].isna()].copy()
    tickets["cycle"] = tickets["cycle"].astype("int64")
    tickets = tickets.merge(per, on=["run_id", "cycle"], how="left")
    info = runs[["run_id", "method", "dataset", "arch", "dense_acc", "sweep", "trial_id"]]
    info = info.assign(
        config_id=config_ids(runs).to_numpy(),
        dataset=data_labels(runs).to_numpy(),
        recipe=recipe_labels(runs).to_numpy(),
    )
    pts = tickets.merge(info, on="run_id", how="inner")
    cycle0 = pts[pts["cycle"] == 0].set_index("run_id")["acc_best"]
    pts["dense_acc"] = pts["dense_acc"].astype("float64").fillna(pts["run_id"].map(cycle0))
    for col in ("sparsity", "acc_best", "acc_final", "overlap", "val_acc_best", "test_acc_at_best_val"):
        pts[col] = pts[col].astype("float64")
    _selection(pts)
    borrow_dense(pts, runs)
    return pts[POINT_COLUMNS].sort_values(["dataset", "arch", "method", "run_id", "cycle"]).reset_index(drop=True)


def data_labels(runs: pd.DataFrame) -> pd.Series:
    """The dataset each run is grouped and titled by (aligned with ``runs``): its ``dataset`` name, and where
    runs of one dataset name read different data (``data_fingerprint``), ``name (file@fingerprint)``: two
    ``.npz`` files are two datasets in every table and plot, never pooled (nor their dense lines averaged)."""
    names = runs["dataset"].astype(object)
    if "data_fingerprint" not in runs:
        return names
    fp = runs["data_fingerprint"].astype(object).where(runs["data_fingerprint"].notna(), None)
    files = runs["data_file"].astype(object) if "data_file" in runs else pd.Series(None, index=runs.index)
    distinct = fp.groupby(names).transform(lambda f: f.dropna().nunique())
    label = names + " (" + files.fillna("?").astype(str) + "@" + fp.fillna("").astype(str).str[:6] + ")"
    return label.where((distinct > 1) & fp.notna(), names)


def config_ids(runs: pd.DataFrame) -> pd.Series:
    """A 12-hex id per run (aligned with ``runs``) hashing its configuration without ``seed`` and without
    the execution settings (resources): runs that differ only by seed share it."""
    owners = flat_field_owners()
    cols = [c for c in runs.columns if owners.get(c) not in (None, "resources") and c != "seed"]
    keys = (json.dumps([plain(v) for v in row], default=str) for row in runs[cols].itertuples(index=False))
    return pd.Series([hashlib.sha256(k.encode()).hexdigest()[:12] for k in keys], index=runs.index, dtype=object)


def plain(v: Any) -> Any:
    """A Parquet cell as plain JSON-able Python (arrays as lists, every kind of null as None)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [plain(x) for x in v]
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _selection(pts: pd.DataFrame) -> None:
    """Add ``select_acc``/``dense_select`` (what tables choose by) and ``report_acc`` (what they report): the
    validation figures for a run with a validation split, else its test figures (``SELECTION_NOTE``)."""
    has_val = pts.groupby("run_id")["val_acc_best"].transform("count") > 0  # any validation figure in the run
    pts["select_acc"] = pts["val_acc_best"].where(has_val, pts["acc_best"])
    pts["report_acc"] = pts["test_acc_at_best_val"].where(has_val, pts["acc_best"])
    dense = pts[pts["cycle"] == 0].set_index("run_id")
    pts["dense_select"] = pts["run_id"].map(dense["val_acc_best"]).where(has_val, pts["dense_acc"])
    pts["dense_report"] = pts["run_id"].map(dense["test_acc_at_best_val"]).where(has_val, pts["dense_acc"])
    pts["selected_by"] = np.where(has_val, "val_acc_best", "acc_best")


def _cumulative_compute(cycles: pd.DataFrame) -> pd.DataFrame:
    c = cycles.assign(cycle=cycles["cycle"].astype("int64"), wall=cycles["wall_seconds"].astype("float64"))
    c["se"] = c["sample_epochs"].astype("float64")
    keys = ["run_id", "cycle"]
    shard = c[c["shard"].notna()].groupby(keys)["wall"].max().rename("shard_wall")
    ticket = c[c["shard"].isna()].groupby(keys)["wall"].sum().rename("ticket_wall")
    se = c.groupby(keys)["se"].sum()
    per = pd.concat([se, shard, ticket], axis=1).fillna(0.0).sort_index()
    per["wall"] = per["shard_wall"] + per["ticket_wall"]
    by_run = per.groupby(level="run_id")
    per["cum_sample_epochs"] = by_run["se"].cumsum().round().astype("int64")
    per["cum_wall_seconds"] = by_run["wall"].cumsum()
    per["search_sample_epochs"] = _search_compute(c, per.index).round().astype("int64")
    # on k + 1 workers: the mask chain before the cycle (slowest shard per round; IMP: its levels) + the ticket
    has_shards = per.index.get_level_values("run_id").isin(set(c.loc[c["shard"].notna(), "run_id"]))
    step = per["shard_wall"].where(has_shards, per["ticket_wall"])
    per["critical_path_seconds"] = step.groupby(level="run_id").cumsum() - step + per["ticket_wall"]
    cols = ["cum_sample_epochs", "search_sample_epochs", "cum_wall_seconds", "critical_path_seconds"]
    return per[cols].reset_index()


def _search_compute(c: pd.DataFrame, index: pd.MultiIndex) -> pd.Series:
    """What it cost to find the ticket of cycle c and train it once: the trainings whose masks formed it
    (COLT: shard rows of cycles < c; IMP, which has no shard rows: its level trainings < c) plus the
    ticket's own training. COLT's evaluations of earlier tickets are not part of the search. An IMP level
    whose ticket a tweak retrains apart holds both trainings (``mask_sample_epochs``: the level training's
    part): a later ticket's chain counts only the level trainings, and ticket c's own training is its
    retraining; earlier levels' retrainings formed no mask. A distilled ticket needs the run's teacher: the
    row that trained it holds it (``teacher_sample_epochs``), and it counts for that ticket and every later
    one (IMP's teacher is its level 0, already in every later ticket's chain)."""
    keys = ["run_id", "cycle"]
    has_shards = set(c.loc[c["shard"].notna(), "run_id"])
    tickets = c[c["shard"].isna()]
    if "mask_sample_epochs" in tickets:
        mask_se = tickets["mask_sample_epochs"].astype("float64")
    else:  # files written before the column: every row is one training
        mask_se = pd.Series(np.nan, index=tickets.index)
    level = mask_se.fillna(tickets["se"])  # what proposed the next mask
    own = (tickets["se"] - mask_se).where(mask_se.notna(), tickets["se"])  # the ticket's own training
    teacher = pd.Series(0.0, index=tickets.index)  # files written before the column: no teacher
    if "teacher_sample_epochs" in tickets:
        teacher = tickets["teacher_sample_epochs"].astype("float64").fillna(0.0)
    own = own - teacher

    def per_cycle(values: pd.Series) -> pd.Series:
        return values.groupby([tickets["run_id"], tickets["cycle"]]).sum().reindex(index, fill_value=0.0)

    shard_se = c[c["shard"].notna()].groupby(keys)["se"].sum().reindex(index, fill_value=0.0)
    is_imp_like = ~index.get_level_values("run_id").isin(has_shards)
    search_step = shard_se + per_cycle(level).where(is_imp_like, 0.0)
    before = search_step.groupby(level="run_id").cumsum() - search_step
    needs_teacher = per_cycle(teacher).groupby(level="run_id").cumsum()  # from the row that trained it on
    return before + per_cycle(own) + needs_teacher


def best_tickets(points: pd.DataFrame, tol: float = TOL) -> pd.DataFrame:
    """One row per (method, dataset, arch): among tickets with sparsity > 0 (all tickets if none), the
    highest sparsity whose ``select_acc >= dense_select - tol`` (rule ``within_tol``); if none qualifies,
    the highest ``select_acc`` (rule ``best_acc``). Ties: higher accuracy, then less compute, then run
    id/cycle. ``select_acc`` is validation accuracy where the run has a split (``SELECTION_NOTE``).
    One rule for every method of a (dataset, arch): where a method there has no dense reference at all (not
    even its recipe's, ``recipes.borrow_dense``), every method there takes the highest ``select_acc`` (rule
    ``best_acc_no_dense``), so no method is held to a tolerance that another escapes.
    """
    rows = []
    pts = points.dropna(subset=["select_acc"])
    blind = no_dense_groups(pts)
    for (_, dataset, arch), g in pts.groupby(GROUP, sort=True):
        pick, rule = _pick(g, tol, "run_id", (dataset, arch) in blind)
        rows.append({**pick.to_dict(), "acc_drop": pick["dense_select"] - pick["select_acc"], "rule": rule})
    return pd.DataFrame(rows, columns=BEST_COLUMNS)


def no_dense_groups(pts: pd.DataFrame) -> set:
    """The (dataset, arch) pairs where some method's tickets all lack ``dense_select``."""
    lacking = pts.groupby(GROUP, sort=False)["dense_select"].count() == 0
    return {(d, a) for (_, d, a), no in lacking.items() if no}


def _pick(g: pd.DataFrame, tol: float, key: str, no_dense: bool = False) -> tuple[pd.Series, str]:
    """The best-ticket rule over the ticket rows ``g`` (``key``: the run or configuration column); with
    ``no_dense`` (a method of the same dataset and arch has no dense reference) the highest ``select_acc``."""
    cand = g[g["sparsity"] > 0] if (g["sparsity"] > 0).any() else g
    if no_dense:
        return _first(cand, ["select_acc", "sparsity"], key), "best_acc_no_dense"
    ok = cand[cand["select_acc"] >= cand["dense_select"] - tol - _EPS]
    if len(ok):
        return _first(ok, ["sparsity", "select_acc"], key), "within_tol"
    return _first(cand, ["select_acc", "sparsity"], key), "best_acc"


def _first(df: pd.DataFrame, descending: list[str], key: str) -> pd.Series:
    cols = descending + ["cum_sample_epochs", key, "cycle"]
    asc = [False] * len(descending) + [True, True, True]
    return df.sort_values(cols, ascending=asc, kind="stable").iloc[0]


def curve(points: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """A run's (sparsity, report_acc, search_sample_epochs) curve, sorted by sparsity, one point per sparsity
    (the earliest cycle), tickets without accuracy dropped. ``report_acc``: see ``SELECTION_NOTE``."""
    c = points[(points["run_id"] == run_id)].dropna(subset=["report_acc"]).sort_values("cycle")
    c = c.drop_duplicates(subset=["sparsity"], keep="first").sort_values("sparsity")
    return c[["sparsity", "report_acc", "search_sample_epochs", "cycle", "critical_path_seconds"]].reset_index(
        drop=True
    )


def config_points(points: pd.DataFrame, trials: pd.DataFrame = None) -> pd.DataFrame:
    """Ticket points averaged per (configuration, cycle) over the configuration's runs (runs of trials
    stopped early left out): mean ``sparsity``, ``select_acc``, ``dense_select``, ``cum_sample_epochs``, and
    ``n`` runs."""
    pts = points[~points["run_id"].isin(_stopped_early_runs(trials))].dropna(subset=["select_acc"])
    mean = {c: (c, "mean") for c in ("sparsity", "select_acc", "dense_select", "cum_sample_epochs")}
    return pts.groupby(GROUP + ["config_id", "cycle"], as_index=False).agg(**mean, n=("run_id", "nunique"))


def matched_sparsity(
    points: pd.DataFrame, trials: pd.DataFrame = None, grid: Iterable[float] = GRID, tol: float = TOL
) -> pd.DataFrame:
    """COLT vs IMP per (dataset, arch) that has both, on the runs of each method's best configuration
    (``MATCHED_NOTE``: the best-ticket rule on :func:`config_points`).

    Sparsities: ``grid`` plus the mean sparsity of each COLT ticket cycle (> 0), kept where a run of each
    method covers them (no extrapolation). Along each run, accuracy and search sample-epochs
    (``_search_compute``) are linearly interpolated (``numpy.interp``); a cell is the mean ± std (ddof 1; null
    for one run) over the runs covering the sparsity, ``n`` of them. ``acc_diff = colt_acc - imp_acc``,
    ``compute_ratio = colt / imp`` (mean sample-epochs).
    """
    cfg, rows = config_points(points, trials), []
    blind = no_dense_groups(cfg)
    for (dataset, arch), g in cfg.groupby(["dataset", "arch"], sort=True):
        no_dense = (dataset, arch) in blind
        best = {m: _pick(mg, tol, "config_id", no_dense)[0]["config_id"] for m, mg in g.groupby("method")}
        if not {"colt", "imp"} <= set(best):
            continue
        curves = {m: _config_curves(points, best[m], trials) for m in ("colt", "imp")}
        colt = g[(g["config_id"] == best["colt"]) & (g["sparsity"] > 0)]["sparsity"]
        for x, is_colt in _common_grid(curves["colt"], curves["imp"], grid, colt):
            c, i = _cell(x, curves["colt"]), _cell(x, curves["imp"])
            if not c["n"] or not i["n"]:  # no run of a method covers x (runs end at different sparsities)
                continue
            rows.append({
                "dataset": dataset, "arch": arch, "sparsity": x, "colt_ticket": is_colt,
                **{f"colt_{k}": v for k, v in c.items()}, **{f"imp_{k}": v for k, v in i.items()},
                "acc_diff": c["acc"] - i["acc"],
                "compute_ratio": c["sample_epochs"] / i["sample_epochs"] if i["sample_epochs"] > 0 else float("nan"),
                "critical_path_ratio": _ratio(c["critical_path_seconds"], i["critical_path_seconds"]),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=MATCHED_COLUMNS)


def unmatched_reasons(points: pd.DataFrame, runs: pd.DataFrame, matched: pd.DataFrame) -> list[str]:
    """Why each (dataset, arch) with COLT and IMP tickets has no row in ``matched``: a method whose runs
    evaluated one ticket each (``eval_tickets: final``) has a point per run, not a curve; else the methods'
    sparsities do not overlap. One line each."""
    pts = points.dropna(subset=["report_acc"])
    pts = pts[pts["sparsity"] > 0]
    done = set(zip(matched["dataset"], matched["arch"]))
    policy = runs.set_index("run_id")["eval_tickets"] if "eval_tickets" in runs else pd.Series(dtype=object)
    lines = []
    for (dataset, arch), g in pts.groupby(["dataset", "arch"], sort=True):
        by = {m: mg for m, mg in g.groupby("method") if m in ("colt", "imp")}
        if len(by) < 2 or (dataset, arch) in done:
            continue
        span = {m: f"{mg['sparsity'].min():.4f}-{mg['sparsity'].max():.4f}" for m, mg in by.items()}
        single = [m for m, mg in by.items() if mg.groupby("run_id").size().max() == 1]
        where = f"on {dataset} / {arch}: COLT's tickets lie at sparsity {span['colt']}, IMP's at {span['imp']}"
        if not single:
            lines.append(f"{where}: no sparsity that runs of both methods reach.")
            continue
        names = sorted(set(policy.reindex(by[single[0]]["run_id"].unique()).dropna()))
        why = f"`eval_tickets: {', '.join(names)}`" if names else "one evaluated ticket"
        lines.append(
            f"{where}. Each {single[0].upper()} run evaluated only its final ticket ({why}): one point per run, "
            "not a curve, so a run covers its own sparsity alone and the compared sparsities (the grid and the "
            "mean ticket sparsity) rarely meet one of each method. Run with `eval_tickets: all` (or `every:N`) "
            "to compare along the curves; the at-target table compares final tickets at a `target_sparsity`."
        )
    return lines


def _config_curves(points: pd.DataFrame, config_id: str, trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{run_id: curve}`` of the configuration's runs (runs of trials stopped early left out)."""
    runs = set(points.loc[points["config_id"] == config_id, "run_id"]) - _stopped_early_runs(trials)
    curves = {r: curve(points, r) for r in sorted(runs)}
    return {r: c for r, c in curves.items() if not c.empty}


def _common_grid(
    cc: dict[str, pd.DataFrame], ic: dict[str, pd.DataFrame], grid: Iterable[float], colt: Iterable[float]
) -> list[tuple[float, bool]]:
    if not cc or not ic:
        return []
    lo = max(min(c["sparsity"].min() for c in curves.values()) for curves in (cc, ic))
    hi = min(max(c["sparsity"].max() for c in curves.values()) for curves in (cc, ic))
    ticket = {round(float(x), 9): float(x) for x in colt}
    xs = {round(float(x), 9): float(x) for x in grid}
    xs.update(ticket)
    return [(x, k in ticket) for k, x in sorted(xs.items()) if lo - _EPS <= x <= hi + _EPS]


def _cell(x: float, curves: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Mean ± std of accuracy, mean sample-epochs, ``n`` and the run ids over the runs whose curve covers ``x``."""
    cover = {r: c for r, c in curves.items() if c["sparsity"].min() - _EPS <= x <= c["sparsity"].max() + _EPS}
    vals = np.array([_interp(x, c) for c in cover.values()], dtype=float).reshape(-1, len(_INTERPOLATED))
    n = len(cover)
    mean = {k: float(vals[:, j].mean()) if n else float("nan") for j, k in enumerate(_INTERPOLATED.values())}
    return {
        "acc": mean["acc"],
        "acc_std": float(vals[:, 0].std(ddof=1)) if n > 1 else float("nan"),
        "n": n,
        **{k: v for k, v in mean.items() if k != "acc"},
        "run_id": ",".join(cover),
    }


# curve column -> cell key, interpolated along each run (``rounds``: the cycle, i.e. prune rounds to the ticket)
_INTERPOLATED = {
    "report_acc": "acc",
    "search_sample_epochs": "sample_epochs",
    "cycle": "rounds",
    "critical_path_seconds": "critical_path_seconds",
}


def _interp(x: float, c: pd.DataFrame) -> tuple[float, ...]:
    sp = c["sparsity"].to_numpy(dtype=float)
    return tuple(float(np.interp(x, sp, c[col].to_numpy(dtype=float))) for col in _INTERPOLATED)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def pareto_points(points: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """``points`` (with accuracy) plus ``excluded`` (the run's trial stopped early) and ``pareto``: not
    dominated in (sparsity, select_acc), both maximised, within its (dataset, arch), among non-excluded."""
    pts = points.dropna(subset=["select_acc"]).copy()
    pts["excluded"] = pts["run_id"].isin(_stopped_early_runs(trials))
    pts["pareto"] = False
    for _, g in pts[~pts["excluded"]].groupby(["dataset", "arch"], sort=False):
        pts.loc[_front_index(g), "pareto"] = True
    return pts


def pareto_front(pareto_pts: pd.DataFrame) -> pd.DataFrame:
    """The front rows of :func:`pareto_points`, by dataset, arch and sparsity."""
    front = pareto_pts[pareto_pts["pareto"]]
    return front.sort_values(["dataset", "arch", "sparsity", "acc_best"])[PARETO_COLUMNS].reset_index(drop=True)


def _front_index(g: pd.DataFrame) -> list:
    """Index labels of the non-dominated points: scan by sparsity descending; a sparsity level's most
    accurate points are on the front iff they beat every point of higher sparsity."""
    keep, best = [], -np.inf
    for sp in sorted(g["sparsity"].unique(), reverse=True):
        level = g[g["sparsity"] == sp]
        top = level["select_acc"].max()
        if top > best:
            keep.extend(level.index[level["select_acc"] == top])
            best = top
    return keep


def _stopped_early_runs(trials: pd.DataFrame) -> set:
    if trials is None or trials.empty:
        return set()
    stopped = (trials["status"] == "stopped_early") | trials["stopped_early"].fillna(False).astype(bool)
    return set(trials.loc[stopped, "run_id"].dropna())


def best_settings(
    points: pd.DataFrame,
    runs: pd.DataFrame,
    trials: pd.DataFrame = None,
    tol: float = TOL,
    targets: pd.DataFrame = None,
) -> pd.DataFrame:
    """Per (dataset, arch, method): the best configuration and the ``colt-ray ticket`` command line that runs
    it (``commands.ticket_command``, for the configuration's run with the lowest seed). Where the runs stop at
    a target sparsity (``targets``, from :func:`at_target`), the configuration with the best mean validation
    accuracy at the target (rule ``best_at_target``); else the best-ticket rule on :func:`config_points`
    (validation averaged over seeds).
    ``report_acc`` is the mean ± std over the configuration's runs at the chosen ticket."""
    from colt_ray.results.commands import ticket_command

    cfg, rows = config_points(points, trials), []
    blind, chosen = no_dense_groups(cfg), {}
    if targets is not None and len(targets):
        for _, t in targets[targets["best"]].iterrows():
            chosen.setdefault((t["dataset"], t["arch"], t["method"]), t)
    for (dataset, arch, method), g in cfg.groupby(["dataset", "arch", "method"], sort=True):
        t = chosen.get((dataset, arch, method))
        if t is not None:
            config_id, fig = t["config_id"], _target_figures(t)
        else:
            pick, rule = _pick(g, tol, "config_id", (dataset, arch) in blind)
            config_id, fig = pick["config_id"], _pick_figures(points, pick, rule, trials)
        ids = set(points.loc[points["config_id"] == config_id, "run_id"])
        seeded = runs[runs["run_id"].isin(ids)]  # the configuration's runs; the line runs its first seed
        run = seeded.sort_values(["seed", "run_id"] if "seed" in seeded else ["run_id"]).iloc[0].to_dict()
        rows.append({
            "dataset": dataset, "arch": arch, "method": method, "config_id": config_id, **fig,
            "command": ticket_command(run, out=f"results/best-{method}-{dataset}-{arch}"),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=SETTINGS_COLUMNS)


def _target_figures(t: pd.Series) -> dict[str, Any]:
    keys = ("n", "sparsity", "select_acc", "report_acc", "report_acc_std", "sample_epochs")
    return {**{k: t[k] for k in keys}, "cycle": float(t["rounds"]), "rule": "best_at_target"}


def _pick_figures(points: pd.DataFrame, pick: pd.Series, rule: str, trials: pd.DataFrame) -> dict[str, Any]:
    at = points[(points["config_id"] == pick["config_id"]) & (points["cycle"] == pick["cycle"])]
    at = at[~at["run_id"].isin(_stopped_early_runs(trials))]
    return {
        "n": int(pick["n"]), "cycle": float(pick["cycle"]), "sparsity": pick["sparsity"],
        "select_acc": pick["select_acc"], **_mean_std(at, "report_acc"),
        "sample_epochs": float(at["search_sample_epochs"].mean()), "rule": rule,
    }  # fmt: skip


def at_target(points: pd.DataFrame, runs: pd.DataFrame, trials: pd.DataFrame = None) -> pd.DataFrame:
    """Per configuration whose runs stop at a ``target_sparsity``: each run's first ticket at or past it, then
    mean ± std over the configuration's runs (seeds) of its ``select_acc`` (validation: what chooses) and
    ``report_acc`` (test at the best-validation epoch), with the mean rounds (cycle), search sample-epochs and
    modelled wall seconds (shards in parallel) it took, and ``n`` runs (runs that never got there left out).
    ``best``: the configuration of its (dataset, arch, method) with the highest mean ``select_acc`` (a tie:
    the one with fewer search sample-epochs, then the lower config id)."""
    if points.empty or "target_sparsity" not in runs:
        return pd.DataFrame(columns=AT_TARGET_COLUMNS)
    target = runs.set_index("run_id")["target_sparsity"].astype("float64")
    pts = points[~points["run_id"].isin(_stopped_early_runs(trials))].copy()
    pts["target"] = pts["run_id"].map(target)
    hit = pts[pts["target"].notna() & (pts["sparsity"] >= pts["target"] - _EPS)]
    first = hit.sort_values("cycle").drop_duplicates("run_id", keep="first")
    first = first.assign(**{c: first[c].astype("float64") for c in ("select_acc", "report_acc")})
    by = first.groupby(GROUP + ["config_id", "target"], sort=True)  # one vectorised pass: a sweep has 1,000s
    out = by.agg(
        n=("run_id", "size"), sparsity=("sparsity", "mean"), select_acc=("select_acc", "mean"),
        select_acc_std=("select_acc", "std"), report_acc=("report_acc", "mean"),
        report_acc_std=("report_acc", "std"), rounds=("cycle", "mean"), sample_epochs=("search_sample_epochs", "mean"),
        wall_seconds=("cum_wall_seconds", "mean"), critical_path_seconds=("critical_path_seconds", "mean"),
    ).reset_index()  # fmt: skip
    out = out[[c for c in AT_TARGET_COLUMNS if c != "best"]]
    # one best per (method, dataset, arch, target): the highest mean select_acc; ties (means of a few seeds'
    # accuracies on one validation set often tie exactly) go to less search compute, then the config id
    keys = GROUP + ["target"]
    out = out.sort_values(
        [*keys, "select_acc", "sample_epochs", "config_id"], ascending=[True] * len(keys) + [False, True, True]
    ).reset_index(drop=True)
    out["best"] = ~out.duplicated(keys, keep="first")
    return out


def _mean_std(g: pd.DataFrame, col: str) -> dict[str, float]:
    v = g[col].astype("float64").dropna()
    return {
        col: float(v.mean()) if len(v) else math.nan,
        f"{col}_std": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
    }


def layer_density(best: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """The LAYERS rows of each best ticket (its run and cycle), in the order they were written."""
    if best.empty or layers.empty:
        return pd.DataFrame(columns=LAYER_COLUMNS)
    lay = layers.assign(cycle=layers["cycle"].astype("int64"), _order=range(len(layers)))
    keys = best[GROUP + ["run_id", "cycle"]].assign(cycle=lambda d: d["cycle"].astype("int64"))
    out = keys.merge(lay, on=["run_id", "cycle"], how="inner").sort_values(GROUP + ["_order"], kind="stable")
    out["overlap"] = out["overlap"].astype("float64")
    return out[LAYER_COLUMNS].reset_index(drop=True)
