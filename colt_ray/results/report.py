"""``colt-ray report``: tables and plots from a run's or a sweep's results directory.

:func:`report` loads the results, computes the four tables (see :mod:`colt_ray.results.tables`), saves them
(``report.md``, or one CSV per table) and the PNG plots into the output directory (a local path or a URI
such as ``s3://bucket/sweeps/x/report``; each file written atomically), and returns them with the text that
:func:`report_main` prints to stdout.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from colt_ray.core.errors import ConfigError
from colt_ray.results import layout, mdtables, plots, tables
from colt_ray.results.layout import PathLike
from colt_ray.results.reader import Results, load_results
from colt_ray.results.writer import check_writable, remove_file, write_bytes_atomic

FORMATS = ("md", "csv")
TITLES = {
    "best_tickets": "Best ticket per (method, dataset, arch)",
    "matched_sparsity": "COLT vs IMP at matched sparsity (mean ± std over seeds, n runs)",
    "pareto_front": "Pareto front of (select_acc, sparsity) per (dataset, arch)",
    "layer_density": "Per-layer density of the best tickets",
    "at_target": "At the target sparsity: each configuration's first ticket at or past it (mean ± std, n runs)",
    "best_settings": "Best settings per method, ready to run (validation selects, over seeds)",
}
EMPTY = {
    "best_tickets": "no ticket has an accuracy",
    "matched_sparsity": "needs COLT and IMP runs on the same dataset and arch with overlapping sparsities",
    "pareto_front": "no ticket has an accuracy",
    "layer_density": "no layer rows for the best tickets",
    "at_target": "no run stops at a target sparsity (--target-sparsity)",
    "best_settings": "no ticket has an accuracy",
}
NOTES = {
    "best_tickets": tables.BEST_NOTE,
    "matched_sparsity": tables.MATCHED_NOTE,
    "at_target": tables.AT_TARGET_NOTE,
}  # printed under a table's heading
PLOT_FILES = {
    "accuracy_vs_sparsity": "accuracy_vs_sparsity.png",
    "pareto_front": "pareto_front.png",
    "layer_density": "layer_density.png",
    "mask_overlap": "mask_overlap.png",
    "colt_variants": "colt_variants.png",
}


@dataclass
class ReportOutput:
    """What :func:`report` produced: the tables, the printed text, every file written, and why a (dataset,
    arch) with COLT and IMP has no matched-sparsity row (``tables.unmatched_reasons``)."""

    tables: dict[str, pd.DataFrame]
    text: str
    files: list[str] = field(default_factory=list)
    out_dir: str = ""
    unmatched: list[str] = field(default_factory=list)


def build_tables(results: Results, tol: float = tables.TOL) -> dict[str, pd.DataFrame]:
    """The four report tables (plus the ``points`` and ``pareto_points`` frames the plots use)."""
    points = tables.ticket_points(results.runs, results.cycles)  # "dataset" names the data file where two differ
    best = tables.best_tickets(points, tol)
    pareto_pts = tables.pareto_points(points, results.trials)
    targets = tables.at_target(points, results.runs, results.trials)
    return {
        "best_tickets": best,
        "matched_sparsity": tables.matched_sparsity(points, results.trials, tol=tol),
        "pareto_front": tables.pareto_front(pareto_pts),
        "layer_density": tables.layer_density(best, results.layers),
        "at_target": targets,
        "best_settings": tables.best_settings(points, results.runs, results.trials, tol, targets),
        "points": points,
        "pareto_points": pareto_pts,
    }


def report(results_dir: PathLike, out_dir: Optional[PathLike] = None, fmt: str = "md") -> ReportOutput:
    """Compute the report of ``results_dir`` and save it (tables + PNG plots) into ``out_dir``
    (default ``<results_dir>/report``; either may be a local path or a URI). ``fmt``: ``"md"`` (one
    ``report.md``) or ``"csv"`` (one CSV per table).

    Raises ConfigError for an unknown format, unreadable/missing results (field ``results``) or an output
    directory that cannot be written (field ``out``).
    """
    if fmt not in FORMATS:
        raise ConfigError("format", f"unknown {fmt!r}; valid: {', '.join(FORMATS)}")
    results = load_results(results_dir)
    out = _out_dir(results_dir, out_dir)
    check_writable(out)
    all_tables = build_tables(results)
    shown = {k: all_tables[k] for k in TITLES}
    pngs = _save_plots(all_tables, results, out)
    unmatched = tables.unmatched_reasons(all_tables["points"], results.runs, shown["matched_sparsity"])
    if fmt == "md":
        text = render_markdown(shown, pngs, results, {"matched_sparsity": unmatched})
        files = [_write_text(out, "report.md", text)]
    else:
        text = render_csv(shown)
        files = [_write_text(out, f"{k}.csv", t.to_csv(index=False)) for k, t in shown.items()]
    return ReportOutput(tables=shown, text=text, files=files + list(pngs.values()), out_dir=out, unmatched=unmatched)


def report_main(results_dir: PathLike, out: Optional[PathLike] = None, fmt: str = "md") -> int:
    """CLI entry: print the report tables to stdout, list the saved files on stderr, return 0.

    ConfigError propagates (the CLI prints it and exits 2).
    """
    output = report(results_dir, out, fmt)
    sys.stdout.write(output.text if output.text.endswith("\n") else output.text + "\n")
    for line in answer_lines(output.tables, output.unmatched):
        print(line)
    print(f"report: wrote {len(output.files)} files to {output.out_dir}", file=sys.stderr)
    return 0


def answer_lines(t: dict[str, pd.DataFrame], unmatched: Optional[list[str]] = None) -> list[str]:
    """The report's one-line answer per (dataset, arch) where COLT and IMP were both run: is COLT worth it
    here? At the sparsest point of the matched-sparsity table, COLT's accuracy against IMP's (as that table
    reports it: test accuracy at the best-validation epoch where runs have a split) and its search compute.
    Where no sparsity is matched, why (``unmatched``: ``tables.unmatched_reasons``)."""
    matched, best = t.get("matched_sparsity"), t.get("best_tickets")
    lines = []
    if matched is not None and len(matched):
        for (dataset, arch), g in matched.groupby(["dataset", "arch"], sort=True):
            row = g.loc[g["sparsity"].idxmax()]
            diff = 100 * row["acc_diff"]
            verdict = "as accurate as" if abs(diff) < 0.05 else ("above" if diff > 0 else "below")
            lines.append(
                f"answer: COLT vs IMP on {dataset}/{arch} at {row['sparsity']:.1%} sparsity: COLT {row['colt_acc']:.4f}"
                f" vs IMP {row['imp_acc']:.4f} ({diff:+.2f} points, {verdict} IMP), at {row['compute_ratio']:.2f}x "
                f"IMP's search compute (n = {int(row['colt_n'])} / {int(row['imp_n'])} runs; see matched sparsity)"
            )
    elif unmatched:
        lines += [f"answer: COLT and IMP were both run, but no sparsity is matched {r}" for r in unmatched]
    elif best is not None and {"colt", "imp"} <= set(best["method"]):
        lines.append("answer: COLT and IMP were both run, but at no sparsity that both reach (see matched sparsity)")
    return lines


def _out_dir(results_dir: PathLike, out_dir: Optional[PathLike]) -> str:
    if out_dir is not None and os.fspath(out_dir) != "":
        return layout.path_at(out_dir)
    return layout.report_dir(results_dir)


def _save_plots(t: dict[str, pd.DataFrame], results: Results, out: str) -> dict[str, str]:
    """Write each plot that has something to draw into ``out``; remove the file of one that has not (it must
    not leave a stale plot from an older report). Returns {plot: path written}."""
    best = t["best_tickets"]
    colt_runs = best.loc[best["method"] == "colt", "run_id"].tolist()
    made = {
        "accuracy_vs_sparsity": plots.accuracy_vs_sparsity(t["points"], best),
        "pareto_front": plots.pareto(t["pareto_points"]),
        "layer_density": plots.layer_density(t["layer_density"]),
        "mask_overlap": plots.mask_overlap(t["points"], results.layers, colt_runs),
        "colt_variants": plots.colt_variants(t["at_target"], variant_settings(results.runs)),
    }
    written = {}
    for key, png in made.items():
        if png is None:
            remove_file(out, (PLOT_FILES[key],))
        else:
            written[key] = write_bytes_atomic(out, (PLOT_FILES[key],), png)
    return written


def variant_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its ``config_id``, ``shards`` and COLT variant settings (runs written before
    a variant existed: its default)."""
    defaults = {"shard_overlap": 0.0, "shard_steps": "epochs", "rewind_step": 0, "shards": 2}
    if runs.empty:
        return pd.DataFrame(columns=["config_id", *defaults])
    out = runs.assign(config_id=tables.config_ids(runs).values)
    for col, value in defaults.items():
        out[col] = out[col].fillna(value) if col in out else value
    return out.drop_duplicates("config_id")[["config_id", *defaults]]


def render_markdown(
    shown: dict[str, pd.DataFrame], pngs: dict[str, str], results: Results, why: Optional[dict[str, list]] = None
) -> str:
    """The report as Markdown: a heading and a table per report table (``mdtables.readable``), then links to
    the plots. ``why``: per table, lines that say why it has no rows where the generic ``EMPTY`` line does not."""
    from colt_ray.results.reader import describe

    parts = [f"# colt_ray report: {results.root}", "", describe(results) + ".", "", tables.SELECTION_NOTE, ""]
    for key, title in TITLES.items():
        parts += [f"## {title}", ""] + ([NOTES[key], ""] if key in NOTES else [])
        df = shown[key]
        if key == "best_settings" and len(df):
            parts += settings_markdown(df)
            continue
        if len(df):
            parts += mdtables.readable(key, with_std(df))
        else:
            reasons = (why or {}).get(key) or [EMPTY[key]]
            parts += [f"No rows {r}" if r.startswith("on ") else f"_No rows: {r}._" for r in reasons] + [""]
    if pngs:
        parts += ["## Plots", ""] + [f"![{k}]({os.path.basename(p)})" for k, p in pngs.items()] + [""]
    return "\n".join(parts)


def settings_markdown(df: pd.DataFrame) -> list[str]:
    """Each best setting as a line of figures and its command line in a code block."""
    parts = []
    for r in df.itertuples(index=False):
        std = f" ± {r.report_acc_std:.4f}" if not _missing(r.report_acc_std) else ""
        parts += [
            f"- **{r.method}** on {r.dataset} / {r.arch} (configuration {r.config_id}, {r.n} "
            f"run{'' if r.n == 1 else 's'}): cycle "
            f"{r.cycle:g}, sparsity {r.sparsity:.4f}, select_acc {r.select_acc:.4f}, report_acc "
            f"{r.report_acc:.4f}{std}, {r.sample_epochs:,.0f} sample-epochs ({r.rule})",
            "",
            "  ```bash",
            f"  {r.command}",
            "  ```",
            "",
        ]
    return parts


def render_csv(shown: dict[str, pd.DataFrame]) -> str:
    """Every table as CSV, each preceded by a ``# <table>`` line."""
    return "\n".join(f"# {key}\n{df.to_csv(index=False)}" for key, df in shown.items())


def with_std(df: pd.DataFrame) -> pd.DataFrame:
    """Each column ``X`` that has an ``X_std`` beside it as text "mean ± std" (the mean alone where std is null:
    one run), ``X_std`` dropped."""
    out = df.copy()
    for col in [c for c in df.columns if f"{c}_std" in df.columns]:
        pairs = zip(df[col], df[f"{col}_std"])
        out[col] = [_cell(m) if _missing(sd) or _missing(m) else f"{_cell(m)} ± {_cell(sd)}" for m, sd in pairs]
        out = out.drop(columns=f"{col}_std")
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (no index); floats to 4 decimals (1 above 100), integer
    columns as integers (``mdtables.table``)."""
    return mdtables.table(df)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _cell(v: Any) -> str:
    if _missing(v):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4f}"
    return str(v).replace("|", "\\|")


def _write_text(out: str, name: str, text: str) -> str:
    return write_bytes_atomic(out, (name,), text.encode("utf-8"))
