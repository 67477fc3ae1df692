"""PNG plots of the report (matplotlib, Agg; imported lazily, no pyplot global state).

Each function draws one figure with a panel per (dataset, arch) and returns it as PNG bytes (the report
writes them where its tables go, a local directory or an object store), or None when there is nothing to
draw.
"""

from __future__ import annotations

import io
import math
from typing import Any, Optional

import pandas as pd

COLORS = {"colt": "tab:blue", "imp": "tab:orange"}
MARKERS = {"colt": "o", "imp": "s"}  # COLT and IMP apart in shape too, not only in colour
DPI = 110


def _figure(n: int, title: str) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(max(n, 1), 2)
    rows = math.ceil(max(n, 1) / cols)
    fig = Figure(figsize=(6.4 * cols, 4.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes[:n]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    return buf.getvalue()


def _color(method: str) -> str:
    return COLORS.get(method, "tab:green")


def _marker(method: str) -> str:
    return MARKERS.get(method, "^")


def accuracy_vs_sparsity(points: pd.DataFrame, best: pd.DataFrame) -> Optional[bytes]:
    """Each ticket's reported accuracy (``report_acc``, the tables' figure: test accuracy at the
    best-validation epoch, best test epoch where a run has no split) vs sparsity: every ticket faded, each
    method's best run as a line named by its recipe, and each method's mean dense ticket as a dashed line
    (runs that trained their own)."""
    pts = points.dropna(subset=["report_acc"])
    if pts.empty:
        return None
    panels = list(pts.groupby(["dataset", "arch"], sort=True))
    fig, axes = _figure(len(panels), "Ticket accuracy vs sparsity")
    best_runs = set(best["run_id"])
    for ax, ((dataset, arch), g) in zip(axes, panels):
        for method, m in g.groupby("method", sort=True):
            ax.scatter(m["sparsity"], m["report_acc"], color=_color(method), marker=_marker(method), alpha=0.3, s=18)
            for _, r in m[m["run_id"].isin(best_runs)].groupby("run_id"):
                r = r.sort_values("sparsity")
                label = f"{r['recipe'].iloc[0]} (best ticket's run)"
                ax.plot(r["sparsity"], r["report_acc"], "-", marker=_marker(method), color=_color(method), label=label)
        own = g[g["dense_source"] == "own"].drop_duplicates("run_id")
        for method, dense in own.groupby("method", sort=True)["dense_report"]:
            if dense.notna().any():
                d = dense.mean()
                ax.axhline(d, color=_color(method), ls="--", lw=1.2, label=f"dense ticket, {method} runs ({d:.4f})")
        _accuracy_axes(ax, dataset, arch, report_label(g))
    return _png(fig)


def report_label(points: pd.DataFrame) -> str:
    """The y-axis name of ``report_acc``, as the runs of ``points`` define it (``tables.SELECTION_NOTE``)."""
    by = set(points["selected_by"].dropna())
    if by == {"acc_best"}:
        return "report_acc: best test accuracy over epochs (no validation split)"
    if by == {"val_acc_best"}:
        return "report_acc: test accuracy at the best-validation epoch"
    return "report_acc: test acc. at the best-validation epoch\n(best test epoch for runs without a split)"


def pareto(pareto_pts: pd.DataFrame) -> Optional[bytes]:
    """All tickets in (sparsity, selection accuracy), faded, in their method's colour and marker; the front as
    a step line with its points in full colour; stopped-early trials' tickets as grey crosses."""
    if pareto_pts.empty:
        return None
    panels = list(pareto_pts.groupby(["dataset", "arch"], sort=True))
    fig, axes = _figure(len(panels), "Pareto front: accuracy vs sparsity (both maximised)")
    for ax, ((dataset, arch), g) in zip(axes, panels):
        inc, exc = g[~g["excluded"]], g[g["excluded"]]
        for method, m in inc.groupby("method", sort=True):
            ax.scatter(m["sparsity"], m["select_acc"], color=_color(method), marker=_marker(method), alpha=0.3,
                       s=22, label=f"{method} ticket")  # fmt: skip
        if len(exc):
            ax.scatter(exc["sparsity"], exc["select_acc"], color="gray", marker="x", s=20, label="stopped early")
        front = g[g["pareto"]].sort_values("sparsity")
        ax.plot(front["sparsity"], front["select_acc"], "-", color="black", lw=1, drawstyle="steps-post",
                label="front")  # fmt: skip
        for method, f in front.groupby("method", sort=True):
            ax.scatter(f["sparsity"], f["select_acc"], color=_color(method), marker=_marker(method), s=50, zorder=3,
                       edgecolors="black", linewidths=0.8, label=f"{method} on the front")  # fmt: skip
        _accuracy_axes(ax, dataset, arch, "select_acc (validation; best test without a split)")
    return _png(fig)


def layer_density(layers: pd.DataFrame) -> Optional[bytes]:
    """Grouped bars: per layer, the density (fraction kept) of each method's best ticket."""
    if layers.empty:
        return None
    panels = list(layers.groupby(["dataset", "arch"], sort=True))
    fig, axes = _figure(len(panels), "Per-layer density of the best tickets")
    for ax, ((dataset, arch), g) in zip(axes, panels):
        names = list(dict.fromkeys(g["layer"]))
        methods = sorted(g["method"].unique())
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            m = g[g["method"] == method].set_index("layer")["density"].reindex(names)
            xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, m.to_numpy(dtype=float), width=width, color=_color(method), label=method)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        ax.set(title=f"{dataset} / {arch}", xlabel="layer", ylabel="density (fraction of weights kept)", ylim=(0, 1.05))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize="small")
    return _png(fig)


def mask_overlap(points: pd.DataFrame, layers: pd.DataFrame, runs: list[str]) -> Optional[bytes]:
    """COLT shard-mask overlap (Jaccard) per cycle: the whole ticket (thick) and each layer (thin)."""
    pts = points[points["run_id"].isin(runs)].dropna(subset=["overlap"])
    if pts.empty:
        return None
    panels = list(pts.groupby(["dataset", "arch"], sort=True))
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(len(panels), "Mask overlap between shards (Jaccard index)")
    for ax, ((dataset, arch), g) in zip(axes, panels):
        for run_id, r in g.groupby("run_id"):
            r = r.sort_values("cycle")
            ax.plot(r["cycle"], r["overlap"], "o-", lw=2.5, color="black", label=f"all weights ({r['recipe'].iloc[0]})")
            lay = layers[(layers["run_id"] == run_id)].dropna(subset=["overlap"])
            for name, lg in lay.groupby("layer", sort=False):
                ax.plot(lg["cycle"].astype(int), lg["overlap"].astype(float), ".-", lw=1, alpha=0.8, label=name)
        ax.set(title=f"{dataset} / {arch}", xlabel="cycle", ylabel="overlap (Jaccard index)", ylim=(0, 1.05))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2)
    return _png(fig)


def _accuracy_axes(ax, dataset: str, arch: str, ylabel: str) -> None:
    """Title, labels, grid and legend of a sparsity-vs-accuracy panel."""
    ax.set(title=f"{dataset} / {arch}", xlabel="sparsity (fraction of prunable weights pruned)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


VARIANTS = ("shard_overlap", "shard_steps", "rewind_step")  # COLT's own settings (docs/algorithms.md)


def colt_variants(targets: pd.DataFrame, settings: pd.DataFrame) -> Optional[bytes]:
    """Where COLT configurations differ in the COLT variants: each one's test accuracy at the target sparsity
    (``report_acc``, mean ± std over seeds) against its
    ``shard_overlap``, the marker saying ``shard_steps`` (o: epochs, ^: match), filled where it rewinds late
    (``rewind_step`` > 0), beside the best IMP configuration's (dashed). ``settings``: one row per config_id
    with the variant columns and ``shards``."""
    colt = targets[targets["method"] == "colt"].merge(settings, on="config_id", how="left")
    if colt.empty or colt[list(VARIANTS)].drop_duplicates().shape[0] < 2:
        return None
    panels = list(colt.groupby(["dataset", "arch"], sort=True))
    fig, axes = _figure(len(panels), "COLT variants: accuracy at the target sparsity")
    for ax, ((dataset, arch), g) in zip(axes, panels):
        for _, r in g.iterrows():
            late, match = r["rewind_step"] > 0, r["shard_steps"] == "match"
            x = r["shard_overlap"] + 0.01 * (r["shards"] - 3)  # k apart, a little
            std = r["report_acc_std"] if pd.notna(r["report_acc_std"]) else 0.0
            ax.errorbar(x, r["report_acc"], yerr=std, color=_color("colt"), alpha=0.5, capsize=2)
            ax.plot(x, r["report_acc"], "^" if match else "o", color=_color("colt"), markersize=8,
                    markerfacecolor=_color("colt") if late else "white")  # fmt: skip
        imp = targets[(targets["method"] == "imp") & targets["best"]]
        imp = imp[(imp["dataset"] == dataset) & (imp["arch"] == arch)]
        if len(imp):
            acc = float(imp["report_acc"].iloc[0])
            ax.axhline(acc, color=_color("imp"), linestyle="--", label=f"best IMP configuration ({acc:.4f})")
        for label, marker, face in (
            ("shard_steps: epochs", "o", "white"), ("shard_steps: match", "^", "white"),
            ("rewind_step > 0 (filled)", "o", _color("colt")),
        ):  # fmt: skip
            ax.plot([], [], marker, color=_color("colt"), markerfacecolor=face, label=label)
        ax.set_title(f"{dataset} / {arch}")
        ax.set_xlabel("shard_overlap (fraction of the training set per shard; <= 1/k: disjoint)")
        ax.set_ylabel("report_acc at the target (test, best-val epoch)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)
