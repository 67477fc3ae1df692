"""Ticket evaluation off the critical path: eval policies, the max-acc-drop stop rule, held records and the
generated command line. The COLT loop is driven with hand-made backends, so accuracies are known exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from colt_ray.cli import main
from colt_ray.core.config import RunConfig, validate
from colt_ray.core.errors import ConfigError
from colt_ray.core.tickets.methods import Backend, Context, Finished, run_colt
from colt_ray.core.tickets.trainer import TrainOutcome

W = "layer.weight"


def ctx(**ticket) -> Context:
    cfg = RunConfig.from_flat({"cycles": 4, "shards": 2, **ticket})
    theta0 = {W: np.arange(1, 101, dtype=np.float32).reshape(10, 10)}
    return Context(cfg, "run", theta0, {W: "linear"})


class FakeShards:
    """Each shard prunes the 20 smallest surviving weights (by |theta0|), so masks are known by hand."""

    def __init__(self):
        self.calls = []

    def __call__(self, theta, mask, cycle, stop=None):
        self.calls.append(cycle)
        keep = mask[W].numpy().reshape(-1).copy()
        alive = np.flatnonzero(keep)
        keep[alive[:20]] = False
        out = {W: keep.reshape(10, 10)}
        return [
            TrainOutcome(i, cycle, {"acc_best": 0.9, "sample_epochs": 1, "wall_seconds": 0.0}, out) for i in range(2)
        ]


class LateEvaluations:
    """Evaluations that land only when asked for with wait (``result``): ``done()`` is False until then,
    like an evaluator actor still busy. Accuracy of cycle c is ``accs[c]``."""

    def __init__(self, accs):
        self.accs, self.submitted = accs, []

    def __call__(self, theta, mask, cycle):
        self.submitted.append(cycle)
        acc = self.accs[cycle]

        class Late:
            def done(self):
                return False

            def result(self):
                return {
                    "acc_best": acc,
                    "acc_final": acc,
                    "val_acc_best": None,
                    "loss": 0.1,
                    "sample_epochs": 5,
                    "wall_seconds": 0.0,
                }

        return Late()


def run(c: Context, accs=(0.9, 0.9, 0.9, 0.9, 0.9), late=True):
    records, evaluate, shards = [], LateEvaluations(list(accs)), FakeShards()
    if not late:
        inner = evaluate
        evaluate = lambda th, m, cy: Finished(inner(th, m, cy).result())  # noqa: E731
    run_colt(c, Backend(shards, None, evaluate), records.append)
    return records, evaluate, shards


@pytest.mark.parametrize(
    "policy,evaluated",
    [("all", [0, 1, 2, 3, 4]), ("final", [4]), ("none", []), ("every:2", [0, 2, 4]), ("every:3", [0, 3, 4])],
)
def test_each_policy_evaluates_its_cycles_and_leaves_the_others_null(policy, evaluated):
    records, evaluate, _ = run(ctx(eval_tickets=policy))
    assert [r.cycle for r in records] == [0, 1, 2, 3, 4]
    rows = [r.ticket_row for r in records]
    assert [r["cycle"] for r in rows if r["evaluated"]] == evaluated
    assert all(r["acc_best"] is None and r["sample_epochs"] == 0 for r in rows if not r["evaluated"])
    assert all(r["acc_best"] == 0.9 for r in rows if r["evaluated"])
    masks = [r.mask for r in records]
    all_masks = [r.mask for r in run(ctx(eval_tickets="all"))[0]]
    assert masks == all_masks  # the policy never changes a mask


def test_the_shard_chain_never_waits_for_an_evaluation():
    # every evaluation stays "not done" until the end: the shards still train every cycle, and the records
    # are emitted afterwards, in cycle order, each with its own evaluation
    records, evaluate, shards = run(ctx(), accs=(0.9, 0.8, 0.7, 0.6, 0.5))
    assert shards.calls == [0, 1, 2, 3] and evaluate.submitted == [0, 1, 2, 3, 4]
    assert [r.ticket_row["acc_best"] for r in records] == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert [r.mask.kept() for r in records] == [100, 80, 60, 40, 20]  # each cycle the shards prune 20 (AND)


@pytest.mark.parametrize("late", [False, True])
def test_max_acc_drop_keeps_cycles_up_to_the_first_crossing(late):
    # dense 0.90; cycle 2 falls 0.06 below it (> 0.05): the run ends at cycle 2; cycle 3 and after are never written
    records, _, shards = run(ctx(max_acc_drop=0.05), accs=(0.90, 0.88, 0.84, 0.95, 0.95), late=late)
    assert [r.cycle for r in records] == [0, 1, 2] and records[-1].done
    if not late:
        assert shards.calls == [0, 1]  # evaluations land at once: nothing trained past the crossing


def test_the_sink_reports_the_sparsest_ticket_within_the_drop(tmp_path):
    from colt_ray.runner import ResultsSink

    c = ctx(max_acc_drop=0.05)
    records, _, _ = run(c, accs=(0.90, 0.88, 0.84, 0.95, 0.95))

    class Prepared:  # what the sink reads of a prepared run
        cfg, run_id, num_classes, ctx = c.cfg, "run", 10, c
        bundle = dataclasses.make_dataclass("B", ["in_shape"])((1, 10, 10))

    sink = ResultsSink(Prepared(), str(tmp_path))
    for r in records:
        sink(r)
    assert sink.last.cycle == 2 and sink.reported.cycle == 1  # cycle 2 crossed the limit; cycle 1 is within it


@pytest.mark.parametrize("value", ["sometimes", "every:0", "every:x"])
def test_a_bad_eval_policy_is_refused(value):
    with pytest.raises(ConfigError, match="eval-tickets: must be all, final, none or every:N"):
        validate(RunConfig.from_flat({"eval_tickets": value}))


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--prune-rate", "nan", "prune-rate: must be a finite number"),
        ("--lr", "inf", "lr: must be a finite number"),
        ("--max-acc-drop", "-0.1", "max-acc-drop: must be in [0, 1]"),
        ("--eval-tickets", "most", "eval-tickets: must be all"),
    ],
)
def test_non_finite_and_out_of_range_flags_are_one_line_errors(flag, value, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["ticket", flag, value, "--backend", "local", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("colt-ray: error: ") and "\n" not in err and message in err
    assert not out.exists()


def test_former_flags_and_setting_names_still_work():
    from colt_ray.cli import build_parser, config_from_args

    args = build_parser().parse_args(["ticket", "--no-eval-tickets", "--prune-groups", "conv"])
    cfg = config_from_args(args)
    assert cfg.ticket.eval_tickets == "none" and cfg.prune.prune_groups == ("conv",)
    old = RunConfig.from_flat({"rate": 0.3, "groups": ["conv"], "eval_tickets": False})
    assert (old.prune.prune_rate, old.prune.prune_groups, old.ticket.eval_tickets) == (0.3, ("conv",), "none")


def test_a_resumed_run_evaluates_each_remaining_cycle_once_and_keeps_the_drop_reference():
    from colt_ray.core.tickets.methods import Resume

    first, _, _ = run(ctx(max_acc_drop=0.05), accs=(0.90, 0.88, 0.84, 0.95, 0.95))
    # resume after cycle 1 (what a checkpoint holds): the dense accuracy comes with it, cycle 2 still crosses
    c1 = first[1]
    resume = Resume(cycle=1, mask=c1.mask, proposals=c1.proposals, theta=c1.theta, dense_acc=0.90)
    records, evaluate, shards = [], LateEvaluations([0.90, 0.88, 0.84, 0.95, 0.95]), FakeShards()
    run_colt(ctx(max_acc_drop=0.05), Backend(shards, None, evaluate), records.append, resume)
    assert evaluate.submitted[0] == 2 and evaluate.submitted.count(2) == 1  # nothing before cycle 2 again
    assert [r.cycle for r in records] == [2] and records[0].done
    assert records[0].mask == first[2].mask
