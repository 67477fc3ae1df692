"""The ``colt-ray`` command: find lottery tickets (``ticket``), evaluate them elsewhere (``transfer``), summarise (``report``).

Every bad input ends with one line ``colt-ray: error: <field>: <what is allowed>`` on stderr and exit
status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from colt_ray.core.config import (
    ACTIVATIONS,
    BUDGETS,
    METHODS,
    OPTIMIZERS,
    PRUNE_GROUPS,
    SCHEDULES,
    SPLITS,
    TWEAKS,
    RunConfig,
    flat_field_owners,
    validate,
)
from colt_ray.core.errors import ConfigError, RunError
from colt_ray.parallel.sweep.cli import add_sweep_parser, cmd_sweep

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise ConfigError("arguments", message)


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {text!r}")

    parse.__name__ = f"list of {kind.__name__}"
    return parse


def _add_recipe(p: argparse.ArgumentParser, d: RunConfig) -> None:
    r = d.recipe
    g = p.add_argument_group("training recipe (every training: shards, IMP levels, ticket evaluation)")
    g.add_argument("--epochs", type=int, default=r.epochs, help="epochs per training")
    g.add_argument("--batch-size", dest="batch_size", type=int, default=r.batch_size, help="minibatch size")
    g.add_argument("--optimizer", default=r.optimizer, help=f"one of {', '.join(OPTIMIZERS)}")
    g.add_argument("--lr", type=float, default=r.lr, help="peak learning rate")
    g.add_argument("--momentum", type=float, default=r.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", dest="weight_decay", type=float, default=r.weight_decay, help="L2 weight decay")
    g.add_argument("--warmup-epochs", dest="warmup_epochs", type=float, default=r.warmup_epochs, help="linear warm-up length")
    g.add_argument("--schedule", default=r.schedule, help=f"lr schedule after warm-up: {', '.join(SCHEDULES)}")
    g.add_argument("--milestones", type=_csv(int), default=r.milestones, help="epochs for step (first = step size) / multistep, e.g. 20,30,45")
    g.add_argument("--gamma", type=float, default=r.gamma, help="lr factor at each step/multistep milestone")
    g.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=r.label_smoothing,
                   help="alpha: true class 1-alpha, others alpha/(C-1)")


def _add_tweaks(p: argparse.ArgumentParser, d: RunConfig) -> None:
    tw = d.retrain
    g = p.add_argument_group("retraining tweaks (ALGORITHMS.md section 3; each independent, combinable)")
    g.add_argument("--tweaks", default=tw.tweaks,
                   help=f"comma-separated, from {', '.join(TWEAKS)} (label-smoothing: alpha = --label-smoothing, "
                   "or 0.1 when that is 0; distill: sparse full-data retraining against the run's dense model)")
    g.add_argument("--activation", default=tw.activation, help=f"replace every ReLU by one of {', '.join(ACTIVATIONS)}")
    g.add_argument("--distill-temperature", dest="distill_temperature", type=float, default=tw.distill_temperature,
                   help="distill: softmax temperature T")
    g.add_argument("--distill-weight", dest="distill_weight", type=float, default=tw.distill_weight,
                   help="distill: weight of T^2 * KL; cross-entropy gets 1 - this")


def _add_jackpot(p: argparse.ArgumentParser, d: RunConfig) -> None:
    j = d.jackpot
    g = p.add_argument_group("jackpot (--method jackpot: a mask searched on frozen pre-trained weights; "
                             "sparsity = --target-sparsity, default 0.9; per-layer budgets from --budget)")
    g.add_argument("--pretrained", default=j.pretrained, metavar="FILE",
                   help="pre-trained weights: a safetensors state dict or a colt_ray ticket file (its theta); "
                   "default: train the dense model first")
    g.add_argument("--pretrain-epochs", dest="pretrain_epochs", type=int, default=j.pretrain_epochs,
                   help="dense training before the search; -1: --epochs, or 0 with --pretrained")
    g.add_argument("--search-epochs", dest="search_epochs", type=int, default=j.search_epochs, help="epochs of score training")
    g.add_argument("--score-lr", dest="score_lr", type=float, default=j.score_lr, help="SGD learning rate of the scores (cosine decay)")
    g.add_argument("--score-weight-decay", dest="score_weight_decay", type=float, default=j.score_weight_decay,
                   help="weight decay on the scores")
    g.add_argument("--short-restriction", dest="short_restriction", action="store_true",
                   help="change the mask only by matched in/out swaps that lower the loss")


def _add_data(p: argparse.ArgumentParser, d: RunConfig, required: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None if required else d.data.dataset, required=required,
                   help="digits (embedded), synthetic, npz, mnist, fashion-mnist, cifar10, cifar100, tinyimagenet")
    g.add_argument("--data-root", dest="data_root", default=None, help="dataset directory (an .npz file for npz)")
    g.add_argument("--download", action="store_true", help="download the dataset first (cifar/mnist; needs internet)")
    g.add_argument("--val-fraction", dest="val_fraction", type=float, default=d.data.val_fraction,
                   help="fraction of the training set held out for validation (stratified)")
    g.add_argument("--no-augment", dest="augment", action="store_false", help="turn off the dataset's standard augmentation")


def _add_resources(p: argparse.ArgumentParser, d: RunConfig) -> None:
    res = d.resources
    g = p.add_argument_group("execution")
    g.add_argument("--backend", default="ray", help="ray (actors train shards concurrently) or local (one process)")
    g.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    g.add_argument("--cpus-per-shard", dest="cpus_per_shard", type=float, default=res.cpus_per_shard, help="CPUs reserved per shard actor")
    g.add_argument("--gpus-per-shard", dest="gpus_per_shard", type=float, default=res.gpus_per_shard,
                   help="GPU share per shard actor (e.g. 0.25); without a GPU the run uses the CPU")
    g.add_argument("--threads", type=int, default=res.threads, help="torch threads per training (same on every backend)")
    g.add_argument("--device", default=res.device, help="auto, cpu or cuda")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    parser = _Parser(prog="colt-ray", description=__doc__.splitlines()[0], formatter_class=_Help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("ticket", formatter_class=_Help, help="find a lottery ticket with COLT, IMP or a jackpot search",
                       description="Find a lottery ticket. COLT: k shard models from the same init, AND of their "
                       "magnitude masks, rewind, repeat. IMP: prune p of the survivors each level, rewind, retrain. "
                       "Jackpot: search a mask on frozen pre-trained weights, no weight training.\n"
                       "Writes runs/, cycles/, layers/ (Parquet) and tickets/ (safetensors) under --out.")
    g = t.add_argument_group("method")
    g.add_argument("--method", default=d.ticket.method, help=f"one of {', '.join(METHODS)}")
    g.add_argument("--arch", default=d.model.arch, help="architecture (see `colt-ray ticket --list`)")
    g.add_argument("--shards", type=int, default=d.ticket.shards, help="COLT: number of shards k")
    g.add_argument("--split", default=d.ticket.split, help=f"COLT shard split: {', '.join(SPLITS)}")
    g.add_argument("--vote", type=int, default=None, help="COLT: keep a weight kept by >= V shards (default: all k, the AND)")
    g.add_argument("--prune-rate", dest="rate", type=float, default=None, help="fraction of surviving weights pruned per round (default: COLT 0.15, IMP 0.20)")
    g.add_argument("--budget", default=d.prune.budget, help=f"pruning budget: {', '.join(BUDGETS)}")
    g.add_argument("--prune-groups", dest="groups", type=_csv(str), default=d.prune.groups, help=f"tensor groups to prune, from {', '.join(PRUNE_GROUPS)}")
    g.add_argument("--cycles", type=int, default=None, help="number of prune rounds (default 5 when no --target-sparsity)")
    g.add_argument("--target-sparsity", dest="target_sparsity", type=float, default=None, help="stop once sparsity reaches this (jackpot: its sparsity, default 0.9)")
    g.add_argument("--rewind-step", dest="rewind_step", type=int, default=0, help="IMP: rewind to the weights after K steps (0 = init)")
    g.add_argument("--no-eval-tickets", dest="eval_tickets", action="store_false", help="COLT: skip training each cycle's ticket on the full data")
    g.add_argument("--seed", type=int, default=d.ticket.seed, help="run seed (init, heads, shards, shuffling)")
    g.add_argument("--list", dest="list_names", action="store_true", help="list architectures and datasets, then exit")
    _add_data(t, d)
    _add_recipe(t, d)
    _add_tweaks(t, d)
    _add_jackpot(t, d)
    _add_resources(t, d)
    t.add_argument("--out", default="results", help="results directory")

    tr = sub.add_parser("transfer", formatter_class=_Help, help="evaluate a saved ticket on another dataset",
                        description="Train a ticket (theta_0 x mask) with a fresh head on another dataset and report its accuracy.")
    tr.add_argument("ticket_file", metavar="TICKET", help="a tickets/<run>/cycle-NNNN.safetensors file")
    tr.add_argument("--arch", default=None, help="expected architecture of the ticket (checked; default: the ticket's own)")
    _add_data(tr, d, required=True)
    _add_recipe(tr, d)
    _add_tweaks(tr, d)
    tr.add_argument("--seed", type=int, default=d.ticket.seed, help="seed of the new head and of shuffling")
    tr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    tr.add_argument("--threads", type=int, default=1, help="torch threads")
    tr.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    tr.add_argument("--json", dest="json_out", default=None, help="also write the result as JSON to this file")

    rp = sub.add_parser("report", formatter_class=_Help, help="tables and plots from a results directory",
                        description="Best ticket per method, COLT vs IMP at matched sparsity, the Pareto front and per-layer "
                        "density, printed and saved with PNG plots.")
    rp.add_argument("results_dir", metavar="RESULTS_DIR", help="output of `colt-ray ticket` or `colt-ray sweep`")
    rp.add_argument("--out", default=None, help="where to save tables and plots (default RESULTS_DIR/report)")
    rp.add_argument("--format", dest="fmt", default="md", help="md or csv")

    add_sweep_parser(sub, _Help)
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    owners = flat_field_owners()
    flat = {k: v for k, v in vars(args).items() if k in owners}
    if flat.get("address") is None:
        import os

        flat["address"] = os.environ.get("RAY_ADDRESS") or None
    return RunConfig.from_flat(flat)


def cmd_ticket(args: argparse.Namespace) -> int:
    from colt_ray.core.tickets.search import prepare
    from colt_ray.results.writer import check_writable
    from colt_ray.runner import ResultsSink

    if args.list_names:
        return _list_names()
    cfg = config_from_args(args)
    validate(cfg)
    check_writable(args.out)
    prepared = prepare(cfg)  # data and architecture checks: still nothing written
    echo = (lambda line: print(line, file=sys.stderr, flush=True))
    sink = ResultsSink(prepared, args.out, echo=echo)
    print(f"run {prepared.run_id}: {cfg.ticket.method} on {cfg.data.dataset} with {cfg.model.arch}, "
          f"{prepared.num_classes} classes, backend {cfg.resources.backend} -> {args.out}", file=sys.stderr)
    if "skip-paths" in cfg.retrain.names:
        from colt_ray.core.tweaks import skip_parameters

        n = skip_parameters(cfg, prepared.bundle.in_shape, prepared.num_classes)
        print(f"skip paths: {n:,} dense parameters, never pruned, not counted in sparsity", file=sys.stderr)
    sink.start()
    try:
        if cfg.resources.backend == "ray":
            from colt_ray.parallel.backend import run_ray

            last = run_ray(prepared, sink)
        else:
            from colt_ray.core.tickets.search import run_local

            last = run_local(prepared, sink)
    except BaseException as exc:
        sink.finish("failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
        raise
    sink.finish("completed")
    t = last.ticket_row
    acc = "n/a" if t["acc_best"] is None else f"{t['acc_best']:.4f}"
    print(f"done: run {prepared.run_id}, {last.cycle} cycles, sparsity {t['sparsity']:.4f}, ticket accuracy {acc}")
    print(f"results: {args.out}/ (runs/, cycles/, layers/ Parquet; tickets/{prepared.run_id}/); "
          f"summarise with: colt-ray report {args.out}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from colt_ray.core.tickets.io import load_ticket
    from colt_ray.core.tickets.transfer import transfer

    ticket = load_ticket(args.ticket_file)
    if args.arch is not None and args.arch != ticket.arch:
        raise ConfigError("arch", f"ticket {args.ticket_file} belongs to arch {ticket.arch!r}, not {args.arch!r}")
    cfg = config_from_args(args)
    validate(cfg)
    outcome = transfer(ticket, cfg)
    result = {"ticket": args.ticket_file, "arch": ticket.arch, "source_dataset": ticket.meta.get("dataset"),
              "dataset": cfg.data.dataset, "sparsity": ticket.mask.sparsity(), **outcome.metrics}
    print(json.dumps(result, default=float))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2, default=float)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from colt_ray.results.report import report_main

    return report_main(args.results_dir, args.out, args.fmt)


def _list_names() -> int:
    from colt_ray.core.data import dataset_names
    from colt_ray.core.models import MODELS

    print("architectures:", ", ".join(MODELS.names()))
    print("datasets:", ", ".join(dataset_names()))
    return 0


COMMANDS = {"ticket": cmd_ticket, "transfer": cmd_transfer, "report": cmd_report, "sweep": cmd_sweep}


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


if __name__ == "__main__":
    sys.exit(main())
