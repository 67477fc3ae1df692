"""The ``colt-ray`` command: find lottery tickets (``ticket``), evaluate them elsewhere (``transfer``), summarise
(``report``), search settings (``sweep``) and watch a sweep (``status``), merge a results directory's parts
into few files (``compact``).

Every bad input ends with one line ``colt-ray: error: <field>: <what is allowed>`` on stderr and exit
status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional

from colt_ray.core.config import RunConfig, default_of, flag_name, flat_field_owners, setting_of, validate
from colt_ray.core.errors import ConfigError, RunError, one_line, stderr_line
from colt_ray.flags import TICKET_GROUPS, HelpFormatter, add_legacy, add_sections
from colt_ray.parallel.sweep.cli import add_sweep_parser, cmd_sweep

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise ConfigError("arguments", message)


DESCRIPTION = (
    "Find sparse lottery tickets with COLT, IMP and their relatives (ticket), evaluate a ticket on other data "
    "(transfer), summarise results as tables and plots (report), search settings in parallel with Ray Tune and "
    "Optuna (sweep), watch a running sweep (status), merge a results directory's parts into few files (compact), "
    "and write a ticket as one file (export). Bad input ends with one line and exit status 2."
)


def build_parser() -> argparse.ArgumentParser:
    import textwrap

    from colt_ray import __version__

    parser = _Parser(prog="colt-ray", description=textwrap.fill(DESCRIPTION, 100), formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"colt-ray {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _ticket_parser(sub)
    _transfer_parser(sub)
    _report_parser(sub)
    _compact_parser(sub)
    _export_parser(sub)
    add_sweep_parser(sub, HelpFormatter)
    _status_parser(sub)
    return parser


def _ticket_parser(sub: Any) -> None:
    t = sub.add_parser(
        "ticket",
        formatter_class=HelpFormatter,
        help="find a lottery ticket with COLT, IMP or a jackpot search",
        description="Find a lottery ticket. COLT: k shard models from the same init, AND of their "
        "magnitude masks, rewind, repeat. IMP: prune p of the survivors each level, rewind, retrain. "
        "Jackpot: search a mask on frozen pre-trained weights, no weight training.\n"
        "Writes runs/, cycles/, layers/ (Parquet) and tickets/ (safetensors) under --out.",
    )
    add_sections(t, TICKET_GROUPS)
    add_legacy(t)
    t.add_argument(
        "--list",
        dest="list_names",
        action="store_true",
        help="list the names each registry-backed setting accepts, with descriptions, and the sweep metrics",
    )
    t.add_argument("--out", default="results", help="results directory")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="run again when --out already holds a completed run of these settings (same run id); by default "
        "that run is reused and the command says so",
    )


def _transfer_parser(sub: Any) -> None:
    tr = sub.add_parser(
        "transfer",
        formatter_class=HelpFormatter,
        help="evaluate a saved ticket on another dataset",
        description="Train a ticket (theta_0 x mask) with a fresh head on another dataset and report its accuracy.",
    )
    tr.add_argument("ticket_file", metavar="TICKET", help="a tickets/<run>/cycle-NNNN.safetensors file")
    tr.add_argument(
        "--arch", default=None, help="expected architecture of the ticket (checked; default: the ticket's own)"
    )
    add_sections(tr, TICKET_GROUPS[1:4], required=("dataset",))
    add_sections(tr, TICKET_GROUPS, only={"seed", "device", "threads", "progress"})
    tr.add_argument("--json", dest="json_out", default=None, help="also write the result as JSON to this file")


def _report_parser(sub: Any) -> None:
    rp = sub.add_parser(
        "report",
        formatter_class=HelpFormatter,
        help="tables and plots from a results directory",
        description="Best ticket per method, COLT vs IMP at matched sparsity, the Pareto front and "
        "per-layer density, printed and saved with PNG plots.",
    )
    rp.add_argument("results_dir", metavar="RESULTS_DIR", help="output of `colt-ray ticket` or `colt-ray sweep`")
    rp.add_argument(
        "--out", default=None, help="where to save tables and plots: a directory or a URI (default RESULTS_DIR/report)"
    )
    rp.add_argument("--format", dest="fmt", default="md", help="md or csv")


def _compact_parser(sub: Any) -> None:
    cp = sub.add_parser(
        "compact",
        formatter_class=HelpFormatter,
        help="merge a results directory's many small Parquet parts into a few large files",
        description="Every run and every (run, cycle) lands as its own small Parquet part. Compact merges "
        "each table's parts (runs/, cycles/, layers/) into a few large files, sorted by key, which every "
        "reader (colt-ray report, pandas, DuckDB, Polars) reads in a few requests. A sweep compacts itself "
        "when it ends. Idempotent and safe to interrupt: a rerun finishes the job. Local paths and "
        "object-store URIs (s3://...).",
    )
    cp.add_argument("results_dir", metavar="DIR_OR_URI", help="output of `colt-ray ticket` or `colt-ray sweep`")


def _export_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "export",
        formatter_class=HelpFormatter,
        help="a ticket as one standalone file (its weights inside)",
        description="A run's ticket files refer to the run's tickets/<run>/theta0.safetensors for their "
        "weights (theta_0 is stored once per run). Export writes a ticket as one file that carries them. "
        "Both paths may be local or object-store URIs (s3://...).",
    )
    ex.add_argument("ticket_file", metavar="TICKET", help="a tickets/<run>/cycle-NNNN.safetensors file")
    ex.add_argument("out", metavar="OUT", help="the file to write")


def cmd_export(args: argparse.Namespace) -> int:
    from colt_ray.results.tickets import export_ticket

    try:
        written = export_ticket(args.ticket_file, args.out)
    except ValueError as e:
        raise ConfigError("out", str(e)) from None
    print(written)
    return 0


def config_from_args(args: argparse.Namespace) -> RunConfig:
    owners = flat_field_owners()
    # a None the setting cannot take is a flag of another command's own (transfer's --arch check)
    flat = {k: v for k, v in vars(args).items() if k in owners and (v is not None or default_of(k) is None)}
    if flat.get("address") is None:
        import os

        flat["address"] = os.environ.get("RAY_ADDRESS") or None
    return RunConfig.from_flat(flat)


def cmd_ticket(args: argparse.Namespace) -> int:
    from colt_ray.results.writer import check_writable

    if args.list_names:
        return _list_names()
    cfg = bars_where_watched(config_from_args(args).resolved())
    validate(cfg, registries=False)  # every check that needs no torch import, before anything starts
    check_writable(args.out)
    done = None if args.overwrite else completed_run(args.out, cfg.run_id())
    if done is not None:
        acc = "n/a" if done["final_acc_best"] is None else f"{done['final_acc_best']:.4f}"
        sparsity = "n/a" if done["final_sparsity"] is None else f"{done['final_sparsity']:.4f}"
        print(
            f"run {done['run_id']}: already completed in {args.out} (sparsity {sparsity}, test acc_best {acc}); "
            "reusing it, nothing run (pass --overwrite to run it again)"
        )
        return 0
    if cfg.recipe.warmup_note():
        print(f"note: {cfg.recipe.warmup_note()}")
    if cfg.backend == "ray":
        return _search_on_ray(cfg, args.out)
    validate(cfg)
    from colt_ray.core.tickets.search import run_local

    return _search(cfg, args.out, run_local)


def cycles_text(last: int) -> str:
    """What a run's records hold, counted as they are (cycle 0 is the dense training)."""
    rounds = "1 prune round" if last == 1 else f"{last} prune rounds"
    return f"cycles 0-{last} (cycle 0 dense, then {rounds})" if last else "cycle 0 only (dense)"


def reported_text(record: Any) -> str:
    """``reported ticket: cycle 2, sparsity 0.2775, test acc_best 0.9531`` naming the accuracy printed: with a
    validation split, the best validation epoch's accuracy and the test accuracy at that epoch (what the report
    shows), else the test accuracy of the best epoch."""
    t = record.ticket_row
    head = f"reported ticket: cycle {record.cycle}, sparsity {t['sparsity']:.4f}"
    if t.get("val_acc_best") is not None:
        test = t.get("test_acc_at_best_val")
        return f"{head}, val_acc_best {t['val_acc_best']:.4f}, test_acc_at_best_val {_acc(test)}"
    return f"{head}, test acc_best {_acc(t['acc_best'])} (no validation split: the best epoch on test)"


def _acc(value: Optional[float]) -> str:
    return "n/a (not evaluated)" if value is None else f"{value:.4f}"


def bars_where_watched(cfg: RunConfig) -> RunConfig:
    """``cfg`` with progress bars off unless this command's stderr is a terminal: on every backend, bars in a
    terminal (a Ray run's actors draw theirs in it through Ray) and plain per-cycle lines in a log."""
    import dataclasses

    if cfg.resources.progress and not sys.stderr.isatty():
        return cfg.replace(resources=dataclasses.replace(cfg.resources, progress=False))
    return cfg


def completed_run(out: str, run_id: str) -> Optional[dict]:
    """The runs row of ``run_id`` in the results directory ``out`` when that run completed, else None (as
    open_lth reuses a finished experiment of the same hash)."""
    from colt_ray.results.reader import read_table, table_files

    try:
        fs, files = table_files(out)
    except ConfigError:  # no results there yet
        return None
    rows = read_table(fs, files["runs"], "runs", ["status", "final_sparsity", "final_acc_best"]).to_pylist()
    found = [r for r in rows if r["run_id"] == run_id and r["status"] == "completed"]
    return found[0] if found else None


def _search_on_ray(cfg: RunConfig, out: str) -> int:
    """Start Ray (its start is mostly waiting on its own processes) while a thread imports torch, checks the rest
    of the config and loads the data; then start the actors and search. Bad input still ends
    with one line and nothing written (Ray is stopped first)."""
    import threading

    from colt_ray.parallel.cluster import init_for, stop_ray

    ahead: dict[str, Any] = {}
    worker = threading.Thread(target=_prepare_ahead, args=(cfg, ahead), daemon=True)
    worker.start()
    started = init_for(cfg)
    try:
        from colt_ray.parallel.backend import open_coordinator

        with open_coordinator(cfg, echo=stderr_line) as coord:  # the actors start while the data may still load
            worker.join()
            if "error" in ahead:
                raise ahead["error"]
            # the runs row says what ran: a GPU share the GPU policy dropped is 0 there, on the CPU
            used = {"gpus_per_shard": coord.cfg.resources.gpus_per_shard, "device": coord.cfg.resources.device}
            return _search(cfg, out, lambda prepared, sink: coord.attach(prepared).run(sink), ahead["prepared"], used)
    except BaseException:
        if started:  # the error's one line is printed after Ray's workers are gone, and nothing of theirs
            stop_ray(quiet=True)
            started = False
        raise
    finally:
        if started:
            stop_ray()


def _prepare_ahead(cfg: RunConfig, box: dict[str, Any]) -> None:
    """Validate and prepare ``cfg`` (torch import, data load, theta_0) into ``box``; an error goes there too."""
    try:
        from colt_ray.core.tickets.search import prepare

        validate(cfg)
        box["prepared"] = prepare(cfg, checked=True)
    except BaseException as exc:  # noqa: BLE001 - raised again by the main thread
        box["error"] = exc


def _search(cfg: RunConfig, out: str, run: Any, prepared: Any = None, used: Optional[dict] = None) -> int:
    """Prepare (data and architecture checks: still nothing written) unless done, then search with ``run``.
    ``used``: settings the runs row records as they ran rather than as asked (resources fitted to the cluster)."""
    from colt_ray.core.tickets.search import prepare
    from colt_ray.runner import ResultsSink

    prepared = prepared or prepare(cfg, checked=True)
    sink = ResultsSink(prepared, out, extra=used, echo=stderr_line)
    stderr_line(
        f"run {prepared.run_id}: {cfg.ticket.method} on {cfg.data.dataset} with {cfg.model.arch}, "
        f"{prepared.num_classes} classes, backend {cfg.backend} -> {out}"
    )
    if cfg.retrain.names:
        from colt_ray.core.tweaks import tweak_notes

        for line in tweak_notes(cfg, prepared.bundle.in_shape, prepared.num_classes):
            stderr_line(line)  # skip paths: their size
    sink.start()
    try:
        run(prepared, sink)
    except BaseException as exc:
        sink.finish("failed", one_line(f"{type(exc).__name__}: {exc}"))
        raise
    sink.finish("completed")
    print(f"done: run {prepared.run_id}, {cycles_text(sink.last.cycle)}; {reported_text(sink.reported)}")
    print(
        f"results: {out}/ (runs/, cycles/, layers/ Parquet; tickets/{prepared.run_id}/); "
        f"summarise with: colt-ray report {out}"
    )
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from colt_ray.core.tickets.transfer import transfer
    from colt_ray.results.tickets import read_ticket

    ticket = read_ticket(args.ticket_file)  # a local path or a URI
    if args.arch is not None and args.arch != ticket.arch:
        raise ConfigError("arch", f"ticket {args.ticket_file} belongs to arch {ticket.arch!r}, not {args.arch!r}")
    cfg = config_from_args(args)
    validate(cfg)
    outcome = transfer(ticket, cfg)
    result = {
        "ticket": args.ticket_file,
        "arch": ticket.arch,
        "source_dataset": ticket.meta.get("dataset"),
        "dataset": cfg.data.dataset,
        "sparsity": ticket.mask.sparsity(),
        **outcome.metrics,
    }
    print(json.dumps(result, default=float))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2, default=float)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from colt_ray.results.report import report_main

    return report_main(args.results_dir, args.out, args.fmt)


def _status_parser(sub: Any) -> None:
    st = sub.add_parser(
        "status",
        formatter_class=HelpFormatter,
        help="a running or finished sweep at a glance (trials, best so far, time left, resources)",
        description="Print a sweep's progress from the files it keeps up to date while it runs (trials.parquet, "
        "sweep_status.json, sweep_summary.json): trials done / running / failed / stopped early, the best "
        "completed trial on each objective with its settings, elapsed time and an estimate of the time left, "
        "and the CPUs and GPUs the running trials hold. Reads three small files; starts no Ray.",
    )
    st.add_argument("sweep_dir", metavar="SWEEP_DIR_OR_URI", help="a sweep directory, STORAGE/NAME (or s3://...)")


def cmd_status(args: argparse.Namespace) -> int:
    from colt_ray.parallel.sweep.status import status_main

    return status_main(args.sweep_dir)


def cmd_compact(args: argparse.Namespace) -> int:
    from colt_ray.results.compact import compact

    for line in compact(args.results_dir).lines():
        print(line)
    return 0


# the settings whose names come from a registry, in the order ``--list`` prints them
LISTED = ("method", "arch", "dataset", "split", "init", "activation", "optimizer", "schedule", "budget", "tweaks")


def _list_names() -> int:
    """Every name a registry-backed setting accepts, each with its registry entry's description, then the
    metrics a sweep may report and select on (``parallel/sweep/metrics.py``)."""
    from colt_ray.core.registry import Registry
    from colt_ray.parallel.sweep.metrics import METRICS

    for name in LISTED:
        spec = setting_of(name)
        registry = spec.choices.registry() if hasattr(spec.choices, "registry") else None
        entries = registry.describe() if isinstance(registry, Registry) else [(n, "") for n in spec.allowed()]
        _print_entries(f"--{flag_name(name)}", entries)
    metrics = [(n, f"{METRICS.get(n).mode}: {text}") for n, text in METRICS.describe()]
    _print_entries("sweep metrics (objectives, scheduler.metric; mode: their default direction)", metrics)
    return 0


def _print_entries(title: str, entries: list[tuple[str, str]]) -> None:
    print(f"{title}:")
    width = max(len(n) for n, _ in entries)
    for n, text in entries:
        print(f"  {n:<{width}}  {text}".rstrip())


COMMANDS = {
    "ticket": cmd_ticket,
    "transfer": cmd_transfer,
    "report": cmd_report,
    "compact": cmd_compact,
    "status": cmd_status,
    "export": cmd_export,
    "sweep": cmd_sweep,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_BAD_INPUT
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"colt-ray: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunError as exc:
        print(f"colt-ray: run failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("colt-ray: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``colt-ray`` command (and ``python -m colt_ray``): ``main``, then exit at once. By then every result
    is written (atomically, fsynced) and Ray is stopped; the exit handlers still run (Ray's, pyarrow's, logging's),
    but Python's teardown of every module and object is skipped: with torch, pyarrow and Ray loaded it takes
    about a second of every run (0.65 s for torch alone, on the machine of benchmarks/RESULTS.md)."""
    import atexit
    import os

    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``colt-ray report ... | head``)
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
