"""``colt-ray sweep SPACE.yaml``: the command-line pieces of a sweep.

``add_sweep_parser(subparsers, formatter_class)`` adds the ``sweep`` subcommand to ``colt-ray``'s parser and
``cmd_sweep(args)`` runs it. ``main(argv)`` is the same command on its own
(``python -m colt_ray.parallel.sweep.cli SPACE.yaml ...``). Nothing here imports Ray until a sweep runs.
Bad input: one line ``colt-ray: error: ...`` on stderr, exit status 2, before Ray starts or anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, Optional

from colt_ray.core.errors import ConfigError

EXIT_BAD_INPUT = 2
DESCRIPTION = """Run many ticket searches with Ray Tune + Optuna over a search space (a YAML file in search_spaces/).
A Ray-backend trial reserves 2 + k resource bundles (its coordinator, one per shard, the evaluator), reports
and checkpoints after every cycle, and writes its runs/cycles/layers Parquet under STORAGE/NAME/;
trials.parquet holds one row per trial (config, final metrics, status, objective, Pareto flag). --resume
continues an interrupted sweep. The last line says how much of the machine's CPU time went into training."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The sweep options (shared by ``colt-ray sweep`` and this module's ``main``)."""
    p.add_argument("space", metavar="SPACE.yaml", help="search space file (format: docs/sweeps.md)")
    p.add_argument(
        "--storage", default="sweeps", help="results root: a directory or a pyarrow URI (s3://bucket/prefix)"
    )
    p.add_argument("--name", default=None, help="sweep name, the directory under --storage (default: the YAML's name)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep STORAGE/NAME")
    p.add_argument(
        "--restart-errored",
        dest="restart_errored",
        action="store_true",
        help="with --resume: trials that errored start over from cycle 0 (their results and checkpoint files "
        "removed first) instead of continuing from their last completed cycle",
    )
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a setting over the YAML's (repeatable; VALUE read as YAML, checked like the file's), e.g. "
        "--set data_root=../shared/data/mnist10k.npz --set epochs=3; a searched setting becomes fixed. Give the "
        "same --set again with --resume",
    )
    p.add_argument(
        "--num-samples",
        dest="num_samples",
        type=int,
        default=None,
        help="configurations to sample (default: the YAML's budget); a compare:/seeds: sweep trains each once per "
        "method and seed",
    )
    p.add_argument(
        "--max-concurrent",
        dest="max_concurrent",
        type=int,
        default=None,
        help="trials at once (default: the YAML's budget)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (host:port, auto, ray://...; 'local' forces a new local Ray). Default: "
        "$RAY_ADDRESS, else a cluster started with `ray start` on this machine, else a new local Ray",
    )
    p.add_argument(
        "--allow-cpu-fallback",
        dest="allow_cpu_fallback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="when trials ask for GPU shares and the Ray cluster has no GPU, train them on the CPU (one line says "
        "so); without it the sweep waits up to start_timeout for an autoscaler node type with GPUs, or stops with "
        "an error when the cluster declares none. The same as --set allow_cpu_fallback=true/false. Default: yes "
        "on a local Ray this command starts, no on a cluster it joins",
    )
    p.add_argument(
        "--optuna-storage",
        dest="optuna_storage",
        default=None,
        metavar="URL",
        help="the Optuna storage of the sweep's study (named after the sweep), over the YAML's sampler.storage: an "
        "RDB URL (sqlite:///sweeps/studies.db, postgresql://user@host/db) or a journal file. Default: "
        "STORAGE/NAME/optuna/journal.log on a local disk; in memory for an object-store STORAGE. The sweep prints "
        "the optuna-dashboard command that opens it; --resume keeps the storage the sweep started with",
    )
    p.add_argument("--quiet", action="store_true", help="no Tune status tables, only the summary")
    p.add_argument(
        "--smoke-test",
        dest="smoke_test",
        action="store_true",
        help="2 trials of 1 epoch and 1 cycle over the same space (CI, checking a cluster)",
    )


def add_sweep_parser(subparsers: Any, formatter_class: Any = argparse.HelpFormatter) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to ``colt-ray``'s subparsers; returns it."""
    p = subparsers.add_parser(
        "sweep",
        formatter_class=formatter_class,
        description=DESCRIPTION,
        help="search ticket settings with Ray Tune + Optuna (Pareto front, ASHA, resume)",
    )
    add_arguments(p)
    return p


def warmup_note(spec: Any) -> None:
    """Say once when every trial's training leaves the default warm-up out (it would fill the training)."""
    from colt_ray.core.config import RunConfig
    from colt_ray.core.errors import stderr_line

    if "epochs" in spec.search or "warmup_epochs" in spec.search:
        return  # per trial: docs/algorithms.md gives the rule
    note = RunConfig.from_flat(spec.base_config()).recipe.warmup_note()
    if note:
        stderr_line(f"sweep {spec.name}: note: {note}")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run ``colt-ray sweep``; ConfigError propagates (the caller prints it and exits 2)."""
    import datetime as dt
    import time

    from colt_ray.parallel.sweep.driver import plan_sweep, run_sweep

    since = (dt.datetime.now(dt.timezone.utc), time.perf_counter())
    plan = plan_sweep(
        args.space,
        args.storage,
        name=args.name,
        resume=args.resume,
        num_samples=args.num_samples,
        max_concurrent=args.max_concurrent,
        smoke_test=args.smoke_test,
        settings=[*args.settings, *fallback_setting(args.allow_cpu_fallback)],
        optuna_storage=args.optuna_storage,
        restart_errored=args.restart_errored,
    )
    warmup_note(plan.spec)
    if args.quiet:  # no Tune tables (verbose 0) and no Optuna info lines ("A new study created ...")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = run_sweep(plan, address=args.address, verbose=0 if args.quiet else 1, since=since)
    from colt_ray.parallel.sweep.trials import interrupted

    if interrupted(plan.spec, rows):
        return 130  # as an interrupted command; the summary said how to continue
    if rows and all(r["status"] == "failed" for r in rows):
        print(
            f"colt-ray: every trial failed; see the error column of runs/ and the Tune logs under {plan.out}/tune/",
            file=sys.stderr,
        )
        return 1
    return 0


def fallback_setting(allow: Optional[bool]) -> list[str]:
    """``--allow-cpu-fallback`` / ``--no-allow-cpu-fallback`` as the ``--set`` it stands for (none if absent)."""
    return [] if allow is None else [f"allow_cpu_fallback={'true' if allow else 'false'}"]


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line ConfigErrors (exit 2 in ``main``)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise ConfigError("arguments", message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``colt-ray sweep`` as a standalone command: ``python -m colt_ray.parallel.sweep.cli SPACE.yaml ...``."""
    parser = _Parser(
        prog="colt-ray sweep", description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_arguments(parser)
    try:
        return cmd_sweep(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"colt-ray: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("colt-ray: interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
