"""Sweeps on Ray: small Optuna sweeps end to end (one objective; two with ASHA and mixed k on the Ray backend),
an interrupted driver resumed with --resume, and ``ray job submit`` to a real head on 127.0.0.1.

In-process sweeps share one Ray per module (2 CPUs). The driver subprocesses and the head get their own Ray
under a private RAY_TMPDIR, and every process carrying that tag is killed afterwards, whatever happened.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import optuna
import pandas as pd
import pytest
import yaml

from colt_ray.parallel.sweep.cli import main
from colt_ray.parallel.sweep.spec import SAMPLER_OPTIONS, SAMPLERS
from colt_ray.parallel.sweep.tuner import OPTUNA_JOURNAL
from colt_ray.results import layout
from colt_ray.results.reader import load_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
TICKET_KEYS = ["sparsity", "kept_weights", "acc_best", "acc_final"]


def tiny_space(name: str, **over) -> dict:
    """Digits, conv2, 1 epoch, 2 cycles (cycles 0, 1, 2 recorded), 3 trials, TPE: seconds per trial."""
    data = {
        "name": name,
        "fixed": {
            "dataset": "digits",
            "arch": "conv2",
            "method": "colt",
            "epochs": 1,
            "cycles": 2,
            "backend": "local",
            "cpus_per_shard": 1,
        },
        "search": {
            "rate": {"float": [0.1, 0.4]},
            "lr": {"logfloat": [0.02, 0.2]},
            "shards": {"int": [1, 2]},
            "split": {"choice": ["class", "random"]},
        },
        "objectives": [{"metric": "acc", "mode": "max"}],
        "allow_test_selection": True,  # these tests check the machinery on test accuracy, on purpose
        "budget": {"num_samples": 3, "max_concurrent": 2, "max_failures": 1},
        "sampler": {"seed": 0},
    }
    data.update(over)
    return data


def write_space(tmp_path, data) -> str:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def ticket_rows(res):
    t = res.tickets()
    return t.set_index(["run_id", "cycle"]).sort_index()


def check_one_ticket_row_per_trial_cycle(res, cycles=(0, 1, 2)):
    """Every trial's run has exactly one ticket row per cycle (all cycles when it completed)."""
    trials = res.trials.set_index("run_id")
    tickets = res.tickets()
    assert not tickets.duplicated(["run_id", "cycle"]).any()
    assert set(tickets["run_id"]) == set(trials.index)
    for run_id, g in tickets.groupby("run_id"):
        got = sorted(g["cycle"])
        if trials.loc[run_id, "status"] == "completed":
            assert got == list(cycles), (run_id, got)
        else:
            assert got == list(range(len(got))), (run_id, got)
    assert len(res.runs) == len(res.trials) and set(res.runs["trial_id"]) == set(res.trials["trial_id"])


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from colt_ray.parallel.cluster import stop_ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    stop_ray()


# ---- in-process sweeps ----------------------------------------------------------------------------------
def count_snapshots(monkeypatch) -> list[float]:
    """Wrap Tune's experiment snapshot (``TuneController.save_to_dir``); the list gets one time per snapshot."""
    from ray.tune.execution.tune_controller import TuneController

    times, original = [], TuneController.save_to_dir

    def save_to_dir(controller):
        times.append(time.monotonic())
        return original(controller)

    monkeypatch.setattr(TuneController, "save_to_dir", save_to_dir)
    return times


@pytest.mark.slow
def test_small_optuna_sweep_completes_with_one_ticket_row_per_trial_cycle(tmp_path, ray_cluster, monkeypatch):
    storage = tmp_path / "st"
    snapshots = count_snapshots(monkeypatch)
    point = {"prune_rate": 0.25, "lr": 0.1, "shards": 2, "split": "random"}  # tried first, then the GP's own choices
    space = tiny_space("small", sampler={"kind": "gp", "seed": 0, "n_startup_trials": 1}, points_to_evaluate=[point])
    assert main([write_space(tmp_path, space), "--storage", str(storage), "--quiet"]) == 0
    # Tune's own period (at least 10 s apart) and the end, not one snapshot per reported cycle (9 here)
    span = snapshots[-1] - snapshots[0]
    assert len(snapshots) <= 2 + span / 10 and len(snapshots) < 9, (len(snapshots), span)
    assert not glob.glob(str(storage / "small" / "tune" / "trial_*" / "checkpoint_*"))  # no Tune checkpoints
    assert len(glob.glob(str(storage / "small" / "tune" / "resume" / "trial_*.npz"))) == 3
    res = load_results(str(storage / "small"))
    assert len(res.trials) == 3 and set(res.trials["status"]) == {"completed"}
    check_one_ticket_row_per_trial_cycle(res)
    assert set(res.runs["status"]) == {"completed"} and set(res.runs["sweep"]) == {"small"}
    assert res.trials["objective"].notna().all() and res.trials["pareto"].sum() >= 1
    best = res.trials.loc[res.trials["objective"].idxmax()]
    assert best["pareto"] and best["final_acc_best"] == best["objective"]
    assert (res.trials["sample_epochs"] > 0).all() and (res.trials["cycles_done"] == 2).all()
    # the study in its journal: each trial once, complete, with its settings and objective value
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage.joinpath("small", *OPTUNA_JOURNAL)))
    )
    study = optuna.load_study(study_name="small", storage=journal)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3 and study.trials[0].params == point
    configs = [json.loads(c) for c in res.trials["config_json"]]
    by_settings = {tuple(c[k] for k in point): v for c, v in zip(configs, res.trials["objective"])}
    assert {tuple(t.params[k] for k in point): t.value for t in study.trials} == by_settings


@pytest.mark.slow
def test_two_objectives_asha_and_mixed_k_on_the_ray_backend(tmp_path, ray_cluster):
    """k=1 and k=2 trials (2 and 3 bundles of 0.5 CPU) share 2 CPUs; the front holds completed trials only."""
    space = tiny_space(
        "multi",
        search={"rate": {"float": [0.1, 0.5]}, "lr": {"logfloat": [0.02, 0.2]}, "shards": {"choice": [1, 2]}},
        objectives=[{"metric": "acc", "mode": "max"}, {"metric": "sparsity", "mode": "max"}],
        # rates differ: ASHA compares trials at equal sparsity, rungs at 10, 20, 40, 80 % pruned
        scheduler={"metric": "acc", "time_attr": "sparsity_pct", "grace_period": 10, "reduction_factor": 2},
        budget={"num_samples": 3, "max_concurrent": 2, "max_failures": 1},
        sampler={"kind": "nsga2", "seed": 0},
    )
    space["fixed"].update(backend="ray", cpus_per_shard=0.5)
    storage = tmp_path / "st"
    assert main([write_space(tmp_path, space), "--storage", str(storage), "--quiet"]) == 0
    res = load_results(str(storage / "multi"))
    trials = res.trials_config()
    assert len(trials) == 3 and set(trials["status"]) <= {"completed", "stopped_early"}
    assert set(trials["shards"]) == {1, 2}  # the seeded sampler draws both
    check_one_ticket_row_per_trial_cycle(res)
    front = trials[trials["pareto"].astype(bool)]
    assert len(front) >= 1 and set(front["status"]) == {"completed"}
    stopped = trials[trials["status"] == "stopped_early"]
    assert stopped["stopped_early"].all() and not stopped["pareto"].any()
    runs = res.runs.set_index("run_id")
    for _, t in trials.iterrows():
        assert runs.loc[t["run_id"], "status"] == {"completed": "completed", "stopped_early": "stopped"}[t["status"]]
    # the study: each trial once, a completed one COMPLETE with both values, one ASHA stopped PRUNED
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage.joinpath("multi", *OPTUNA_JOURNAL)))
    )
    state = {"completed": optuna.trial.TrialState.COMPLETE, "stopped_early": optuna.trial.TrialState.PRUNED}
    study = optuna.load_study(study_name="multi", storage=journal)
    told = {(t.params["prune_rate"], t.params["lr"]): t for t in study.trials}
    assert len(study.trials) == len(told) == 3
    for _, t in trials.iterrows():
        got = told[(t["prune_rate"], t["lr"])]
        assert got.state == state[t["status"]], (t["status"], got.state)
        if t["status"] == "completed":
            assert got.values == [t["final_acc_best"], t["final_sparsity"]]


# the sampler kinds the other sweeps here do not run: gp (the small sweep), nsga2 (the ASHA sweep), grid (trackers)
REAL_SAMPLERS = {
    "tpe": {"multivariate": True, "group": True, "n_startup_trials": 1, "constant_liar": True},
    "cmaes": {"n_startup_trials": 1},
    "qmc": {"qmc_type": "halton", "scramble": True},
    "random": {},
}


@pytest.mark.slow
def test_each_sampler_kind_and_option_runs_a_two_trial_sweep(tmp_path, ray_cluster):
    """Each kind with its options, in a real 2-trial sweep, the study told both trials with the sampler's own
    draws (past n_startup_trials=1 for tpe and cmaes)."""
    fixed = {**tiny_space("x")["fixed"], "cycles": 1}
    for kind, options in REAL_SAMPLERS.items():
        space = tiny_space(
            f"s-{kind}", fixed=fixed, search={"prune_rate": {"float": [0.1, 0.4]}, "lr": {"logfloat": [0.02, 0.2]}},
            budget={"num_samples": 2, "max_concurrent": 2}, sampler={"kind": kind, "seed": 0, **options},
        )  # fmt: skip
        storage = tmp_path / kind
        assert main([write_space(tmp_path, space), "--storage", str(storage), "--quiet"]) == 0, kind
        trials = load_results(str(storage / f"s-{kind}")).trials
        assert len(trials) == 2 and set(trials["status"]) == {"completed"}, kind
        journal = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(storage.joinpath(f"s-{kind}", *OPTUNA_JOURNAL)))
        )
        study = optuna.load_study(study_name=f"s-{kind}", storage=journal)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2, kind
        assert sorted(t.value for t in study.trials) == sorted(trials["objective"]), kind
    assert set(REAL_SAMPLERS) | {"gp", "nsga2", "grid"} == set(SAMPLERS)
    # nsga2's population_size: at the searcher level only (test_sweep_snapshots), past its first generation
    assert {k for o in REAL_SAMPLERS.values() for k in o} | {"population_size"} == set(SAMPLER_OPTIONS)


@pytest.mark.slow
def test_an_interrupted_sweep_prints_the_whole_command_that_finishes_it(tmp_path, ray_cluster, capsys, monkeypatch):
    """Ctrl-C (SIGINT) after the first trial of a sweep started with --set and budget overrides: exit 130 and
    the complete resume command, which, run as printed, finishes the sweep (exit 0) with the budget it started
    with; run again, it says the sweep had finished and exits 0; a resume with another budget is refused."""
    import shlex

    from colt_ray.parallel.sweep.live import LiveTable

    original, sent = LiveTable.on_trial_complete, []

    def interrupt_once(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the driver's terminal: Tune stops the experiment

    monkeypatch.setattr(LiveTable, "on_trial_complete", interrupt_once)
    space = write_space(tmp_path, tiny_space("ctrlc"))  # the YAML's budget: 3 trials
    storage = os.path.relpath(tmp_path / "st")  # as a person types it
    argv = [space, "--storage", storage, "--set", "cycles=1", "--num-samples", "2", "--max-concurrent", "1"]
    assert main([*argv, "--quiet"]) == 130
    printed = capsys.readouterr().out
    (line,) = [x for x in printed.splitlines() if "interrupted with" in x]
    command = line.split("continue with: ", 1)[1]
    assert command == shlex.join(
        ["colt-ray", "sweep", space, "--storage", storage, "--name", "ctrlc", "--set", "cycles=1",
         "--num-samples", "2", "--max-concurrent", "1", "--resume"]
    )  # fmt: skip
    monkeypatch.setattr(LiveTable, "on_trial_complete", original)
    resumed = shlex.split(command)[2:]
    assert main([*resumed, "--quiet"]) == 0
    out = capsys.readouterr()
    assert "interrupted with" not in out.out + out.err and "nothing to resume" not in out.err
    res = load_results(str(tmp_path / "st" / "ctrlc"))
    assert len(res.trials) == 2 and set(res.trials["status"]) == {"completed"}
    check_one_ticket_row_per_trial_cycle(res, cycles=(0, 1))
    # the whole command again, on the finished sweep; then the short one (the record has the rest)
    for again in (resumed, [space, "--storage", storage, "--name", "ctrlc", "--resume"]):
        assert main([*again, "--quiet"]) == 0
        assert "sweep ctrlc: every trial had finished already; nothing to resume" in capsys.readouterr().err
    assert main([space, "--storage", storage, "--resume", "--num-samples", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "colt-ray: error: num-samples: the sweep was started with --num-samples 2; a resume keeps what it started "
        "with: leave it out or give the same"
    ]


def http_json(url: str, timeout: float = 10.0):
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def answers(url: str) -> bool:
    try:
        http_json(url, timeout=2.0)
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_of_a_sweep_kept_in_an_rdb_storage(tmp_path, ray_cluster, capsys):
    """--optuna-storage sqlite:///...: the sweep prints the optuna-dashboard command; that command, run on
    127.0.0.1, serves the study (named after the sweep) with every trial, its settings and both objective values
    as trials.parquet has them; and a real browser renders the study's name."""
    db = f"sqlite:///{tmp_path / 'studies.db'}"
    space = tiny_space("dash", objectives=[{"metric": "acc", "mode": "max"}, {"metric": "sparsity", "mode": "max"}])
    storage = tmp_path / "st"
    assert main([write_space(tmp_path, space), "--storage", str(storage), "--optuna-storage", db]) == 0
    printed = capsys.readouterr()
    assert f"watch it live: optuna-dashboard {db}" in printed.err
    # Tune's status table has a column per objective, trials sorted by the first (acc)
    header = [line for line in printed.out.splitlines() if "Trial name" in line][-1]  # the last, with results
    assert re.search(r"\bacc\b.*\bsparsity\b", header) and "prune_rate" in header, header
    lines = printed.out.splitlines()
    at = max(i for i, line in enumerate(lines) if "Trial name" in line)
    names = [c.strip() for c in lines[at].split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in lines[at + 2 : at + 5]]
    accs = [float(r[names.index("acc")]) for r in rows]
    assert accs == sorted(accs, reverse=True), accs
    assert not (storage / "dash" / "optuna" / "journal.log").exists()  # the study is in the database only
    trials = load_results(str(storage / "dash")).trials
    port = free_ports(1)[0]
    server = subprocess.Popen(
        [os.path.join(VENV_BIN, "optuna-dashboard"), db, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/api/studies"), 60, "optuna-dashboard to answer", server)
        (study,) = [s for s in http_json(f"{base}/api/studies")["study_summaries"] if s["study_name"] == "dash"]
        assert study["directions"] == ["maximize", "maximize"]
        shown = http_json(f"{base}/api/studies/{study['study_id']}")["trials"]
        assert len(shown) == len(trials) == 3 and {t["state"] for t in shown} == {"Complete"}
        configs = [json.loads(c) for c in trials["config_json"]]
        expected = sorted(
            (c["prune_rate"], c["shards"], acc, sparsity)
            for c, acc, sparsity in zip(configs, trials["final_acc_best"], trials["final_sparsity"])
        )
        got = []
        for t in shown:
            params = {p["name"]: p["param_external_value"] for p in t["params"]}
            assert set(params) == {"prune_rate", "lr", "shards", "split"}
            got.append((float(params["prune_rate"]), int(params["shards"]), *t["values"]))
        assert sorted(got) == expected

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.skip("no chromium on PATH for the browser check (.ci/run installs Debian's chromium)")
        page = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chromium'}",
             "--virtual-time-budget=15000", "--dump-dom", f"{base}/dashboard"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert page.returncode == 0, page.stderr[-2000:]
        # the study list as the page's scripts render it from the API ("1. dash"; not in the served HTML)
        assert re.search(r">\d+\. dash<", page.stdout), page.stdout[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def wandb_records(path: str) -> list:
    """The records of a W&B transaction log (``run-<id>.wandb``), decoded with W&B's own protobuf ``Record``:
    a 7-byte header (``:W&B``, magic, version), then LevelDB-log records in 32 KiB blocks (crc32, length,
    type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:7]
    block, pos, parts, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_key(item) -> str:
    """The name of a W&B history or config item (``key``, or its ``nested_key`` parts)."""
    return item.key or "/".join(item.nested_key)


def no_infinity(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)


@pytest.mark.slow
def test_trackers_get_each_trials_settings_and_finite_metrics(tmp_path, ray_cluster, capsys):
    """A grid sweep with callbacks: [mlflow, tensorboard, wandb offline]: each tracker, read back with its own
    reader, has one run per trial with the trial's settings and its metrics per cycle as trials and tickets have
    them, every value finite: the *_at_target costs (infinite for the searcher before a ticket reaches the target)
    are left out until then."""
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fixed = {**tiny_space("x")["fixed"], "target_sparsity": 0.45}
    space = tiny_space(
        "track", fixed=fixed, search={"prune_rate": {"grid": [0.3, 0.4]}}, budget={"max_concurrent": 2},
        sampler={"seed": 0},  # a grid: its 2 points, each in one trial, as many trials as points by default
        callbacks=["mlflow", "tensorboard", {"wandb": {"mode": "offline"}}],
    )  # fmt: skip
    storage = tmp_path / "st"
    assert main([write_space(tmp_path, space), "--storage", str(storage), "--quiet"]) == 0
    out = storage / "track"
    err = capsys.readouterr().err
    assert f"mlflow: mlflow ui --backend-store-uri sqlite:///{out / 'mlflow.db'}" in err
    assert f"tensorboard: tensorboard --logdir {out / 'tune'}" in err and f"runs in {out / 'wandb'}" in err
    res = load_results(str(out))
    tickets = res.tickets().sort_values("cycle")
    expected = {}  # trial id -> (its settings, its acc per cycle, the first cycle at or past the target)
    for _, t in res.trials.iterrows():
        accs = tickets[tickets["run_id"] == t["run_id"]]
        reached = accs[accs["sparsity"] >= 0.45]["cycle"]
        expected[t["trial_id"]] = (json.loads(t["config_json"]), list(accs["acc_best"]), int(reached.min()))
    assert sorted(config["prune_rate"] for config, _, _ in expected.values()) == [0.3, 0.4]  # the grid, once each
    assert sorted(first for _, _, first in expected.values()) != [0, 0]  # some cycle had infinite costs

    def steps_from(first):  # Tune's training_iteration of the cycles at or past the target
        return list(range(first + 1, 4))

    client = mlflow.tracking.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("track").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(f"trial_{i}" for i in expected)
    for r in runs:
        config, accs, first = expected[r.info.run_name.removeprefix("trial_")]
        assert r.info.status == "FINISHED"
        assert r.data.params["prune_rate"] == str(config["prune_rate"]) and r.data.params["epochs"] == "1"
        assert r.data.params["dataset"] == "digits" and r.data.params["target_sparsity"] == "0.45"
        assert [m.value for m in client.get_metric_history(r.info.run_id, "acc")] == pytest.approx(accs)
        assert [m.step for m in client.get_metric_history(r.info.run_id, "rounds_at_target")] == steps_from(first)
        assert no_infinity(r.data.metrics.values())

    for trial_id, (_, accs, first) in expected.items():
        events = EventAccumulator(str(out / "tune" / f"trial_{trial_id}"))
        events.Reload()
        assert [e.value for e in events.Scalars("ray/tune/acc")] == pytest.approx(accs)
        assert [e.step for e in events.Scalars("ray/tune/rounds_at_target")] == steps_from(first)
        for tag in events.Tags()["scalars"]:
            assert no_infinity(e.value for e in events.Scalars(tag)), tag

    logs = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(logs) == 2
    for log in logs:
        records = wandb_records(log)
        kinds = [r.WhichOneof("record_type") for r in records]
        assert kinds.count("run") == 1 and kinds[-1] == "exit", (log, os.path.getsize(log), kinds)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        config, accs, first = expected[run.run_id]
        assert run.project == "track" and run.run_group == "track"
        settings = {}
        for r in records:
            if r.WhichOneof("record_type") == "config":
                settings.update({wandb_key(u): json.loads(u.value_json) for u in r.config.update})
        assert settings["prune_rate"] == config["prune_rate"] and settings["dataset"] == "digits"
        history = [
            {wandb_key(i): json.loads(i.value_json) for i in r.history.item}
            for r in records
            if r.WhichOneof("record_type") == "history"
        ]
        assert [h.get("acc") for h in history] == pytest.approx(accs), history
        assert [h["_step"] for h in history if "rounds_at_target" in h] == steps_from(first)
        assert all(no_infinity(v for v in h.values() if isinstance(v, (int, float))) for h in history)


# ---- subprocess drivers with their own Ray ---------------------------------------------------------------
@pytest.fixture
def ray_tag():
    """A private RAY_TMPDIR; afterwards every process started under it is killed (a scoped `ray stop`)."""
    tag = f"/tmp/cr{uuid.uuid4().hex[:8]}"
    os.makedirs(tag)
    try:
        yield tag
    finally:
        kill_tagged(tag)
        subprocess.run(["rm", "-rf", tag], check=False)


def tagged_pids(tag: str) -> list[int]:
    """Processes whose command line or environment carries ``tag`` (Ray processes of that RAY_TMPDIR)."""
    pids, needle = [], tag.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in cmd or needle in env:
            pids.append(int(entry))
    return pids


def kill_tagged(tag: str, grace: float = 3.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pid in tagged_pids(tag):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + wait
        while tagged_pids(tag) and time.time() < deadline:
            time.sleep(0.5)


def wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver ended (rc={proc.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def finished_before_it_was_killed(out) -> bool:
    """True when the live trials table of the sweep in ``out`` shows every planned trial ended."""
    table, status = out / "trials.parquet", out / "sweep_status.json"
    if not table.exists() or not status.exists():
        return False
    planned = json.loads(status.read_text())["planned_trials"]
    statuses = list(pd.read_parquet(table)["status"])
    return len(statuses) == planned and "running" not in statuses


def snapshot_ids(out):
    from colt_ray.parallel.sweep.orphans import snapshot_trial_ids

    return snapshot_trial_ids(str(out)) or set()


@pytest.mark.slow
@pytest.mark.parametrize("stale", [False, True], ids=["snapshot-on-its-period", "stale-snapshot"])
def test_interrupted_sweep_resumes_and_keeps_each_trial_cycle_once(tmp_path, ray_tag, stale):
    """Killed once the first trial checkpointed a cycle; or (``stale``) with Tune's snapshot period set to an
    hour, so the only snapshot is the first, once a third trial (unknown to it) has written its runs row: the
    resume removes that run, continues the first two from their checkpoint files (finished or not), and
    samples the third place again."""
    space = tiny_space("resume")
    storage, out = tmp_path / "st", tmp_path / "st" / "resume"
    cmd = [
        sys.executable,
        "-m",
        "colt_ray.parallel.sweep.cli",
        write_space(tmp_path, space),
        "--storage",
        str(storage),
        "--quiet",
        "--address",
        "local",  # its own Ray: without it the driver joins any Ray running on this machine (a shared one)
    ]
    env = {**os.environ, "RAY_TMPDIR": ray_tag, **({"TUNE_GLOBAL_CHECKPOINT_S": "3600"} if stale else {})}
    runs = out / "runs"

    def ready():
        if not glob.glob(str(out / "tune" / "experiment_state-*.json")) or not (out / "trials.parquet").exists():
            return False  # the live trials table is written from the first reported result on
        if not stale:  # the first trial's first cycle is written and checkpointed
            return bool(glob.glob(str(out / "tune" / "resume" / "trial_*.npz")))
        ids = snapshot_ids(out)
        return any(p.stem.rsplit("-", 1)[-1] not in ids for p in runs.glob("*.parquet")) if ids else False

    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path
        )
        try:
            wait_for(ready, 300, "a run the snapshot does not know" if stale else "the first checkpoint", proc)
            known = snapshot_ids(out)
            # colt-ray status on the running sweep: what it has done and is doing, from its live files
            live = subprocess.run(
                [sys.executable, "-m", "colt_ray", "status", str(out)], capture_output=True, text=True
            )
            assert live.returncode == 0 and live.stdout.startswith(f"sweep resume at {out} (updated "), live
            assert "trials: 3 planned; " in live.stdout and re.search(r"[12] running", live.stdout), live.stdout
            assert "cluster: " in live.stdout and " of 2 CPUs held by the " in live.stdout, live.stdout
            before = ticket_rows(load_results(str(out)))
            before = before[[r.rsplit("-", 1)[-1] in known for r in before.index.get_level_values("run_id")]]
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    kill_tagged(ray_tag)
    assert not finished_before_it_was_killed(out), "the sweep finished before it could be interrupted"
    # compacted while interrupted: the resumed trials write their parts beside the compacted files
    compacted = subprocess.run([sys.executable, "-m", "colt_ray", "compact", str(out)], capture_output=True, text=True)
    # (a part whose write the kill cut short leaves a temporary file: not a result; the resume removes it)
    results = [n for n in os.listdir(out / "cycles") if ".tmp-" not in n]
    assert compacted.returncode == 0 and results == ["compacted-g000001-0000.parquet"], compacted

    resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not [n for d in ("runs", "cycles", "layers") for n in os.listdir(out / d) if ".tmp-" in n]
    if stale:  # at least the run that made ready() true (the second trial too, if it started after snapshot 1)
        assert re.search(r"removed \d+ run\(s\) started after", resumed.stderr), resumed.stderr[-3000:]
    assert "snapshotting has been triggered multiple times" not in resumed.stderr  # Tune's excessive-sync warning
    res = load_results(str(out))
    assert len(res.trials) == 3 and set(res.trials["status"]) == {"completed"}, res.trials
    check_one_ticket_row_per_trial_cycle(res)
    final = subprocess.run([sys.executable, "-m", "colt_ray", "status", str(out)], capture_output=True, text=True)
    assert final.returncode == 0 and f"sweep resume at {out} (finished)" in final.stdout, final
    assert "3 done (3 completed, 0 stopped early, 0 failed), 0 running" in final.stdout, final.stdout
    assert re.search(r"best acc \(max\): [0-9.]+, trial \w+: lr=[0-9.]+, prune_rate=", final.stdout), final.stdout
    # the study in its journal: each finished trial once, with its settings and value; a trial asked after the
    # snapshot (unknown to Tune, its run removed) is FAIL, not left RUNNING
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(out.joinpath(*OPTUNA_JOURNAL)))
    )
    study = optuna.load_study(study_name="resume", storage=journal)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.state for t in study.trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    configs = [json.loads(c) for c in res.trials["config_json"]]
    assert sorted((t.params["prune_rate"], t.params["lr"], t.value) for t in done) == sorted(
        (c["prune_rate"], c["lr"], v) for c, v in zip(configs, res.trials["objective"])
    )
    after = ticket_rows(res)
    assert before.index.isin(after.index).all()
    assert after.loc[before.index, TICKET_KEYS].equals(
        before[TICKET_KEYS]
    )  # completed cycles are not redone differently
    for table in ("runs", "cycles", "layers"):  # the finished sweep compacted itself: old and new rows merged
        (name,) = os.listdir(out / table)  # g2, or g3 when the resume first dropped orphans from g1
        assert layout.compacted_generation(name) in (2, 3), (table, name)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def upload_only_python(tmp_path) -> str:
    """A ``bin/`` whose ``python`` sees this environment's packages but not this checkout: a venv whose one
    ``.pth`` line names our site-packages. Python reads ``.pth`` files only in its own site directories, so
    the editable install's finder (a ``.pth`` in our site-packages) is not run: a module missing from the
    job's upload fails to import, as on a cluster, instead of being filled in from this checkout."""
    import site
    import sysconfig

    venv = tmp_path / "jobpy"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    target = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    ours = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    with open(os.path.join(target, "colt_ray_test_deps.pth"), "w") as fh:
        fh.write("\n".join(dict.fromkeys(ours)) + "\n")
    return str(venv / "bin")


@pytest.mark.slow
def test_ray_job_submit_runs_the_quick_space_on_a_real_head(tmp_path, ray_tag, monkeypatch):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from colt_ray import cli

    gcs, dash, client_port, agent, agent_grpc, metrics, env_agent = free_ports(7)
    # RAY_AUTH_MODE fixed for head and clients alike: whether a token sits in ~/.ray must not matter here;
    # the job's `python` can import colt_ray only from the upload, as on a cluster (upload_only_python)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        "RAY_TMPDIR": ray_tag,
        "RAY_AUTH_MODE": "disabled",
        "PATH": os.pathsep.join([upload_only_python(tmp_path), VENV_BIN, os.environ.get("PATH", "")]),
    }
    ray_exe = os.path.join(VENV_BIN, "ray")
    subprocess.run(
        [
            ray_exe,
            "start",
            "--head",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(gcs),
            "--num-cpus",
            "2",
            "--include-dashboard=true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash),
            "--ray-client-server-port",
            str(client_port),
            "--dashboard-agent-listen-port",
            str(agent),
            "--dashboard-agent-grpc-port",
            str(agent_grpc),
            "--metrics-export-port",
            str(metrics),
            "--runtime-env-agent-port",
            str(env_agent),
            "--disable-usage-stats",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=240,
    )
    address, storage = f"http://127.0.0.1:{dash}", tmp_path / "st"
    wired = "sweep" in getattr(cli, "COMMANDS", {})
    entry = [] if wired else ["--entrypoint", "python -m colt_ray.parallel.sweep.cli"]
    submit = subprocess.run(
        [
            sys.executable,
            "scripts/submit_sweep.py",
            "search_spaces/quick.yaml",
            "--address",
            address,
            "--storage",
            str(storage),
            "--name",
            "job",
            "--install",
            "none",
            "--ray",
            ray_exe,
            *entry,
            "--",
            "--smoke-test",
            "--quiet",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert "ray job logs -f colt-ray-job-" in submit.stdout and f"{storage}/job/" in submit.stdout
    job_id = next(line.split()[1] for line in submit.stdout.splitlines() if line.startswith("job: "))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # this process is a client of the same head
    client = JobSubmissionClient(address)
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    wait_for(lambda: client.get_job_status(job_id) in terminal, 480, "the job to end")
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-4000:]
    res = load_results(str(storage / "job"))
    assert len(res.trials) == 2 and set(res.trials["status"]) == {"completed"}
    check_one_ticket_row_per_trial_cycle(res, cycles=(0, 1))

    # with that head still up and no RAY_ADDRESS, a ticket run starts a local Ray of its own (Ray alone would
    # join the head and then refuse the run's num_cpus with a traceback)
    env.pop("RAY_ADDRESS", None)
    alone = subprocess.run(
        [sys.executable, "-m", "colt_ray", "ticket", "--dataset", "digits", "--arch", "lenet300", "--cycles", "1",
         "--epochs", "1", "--eval-tickets", "none", "--backend", "ray", "--no-progress", "--out", str(tmp_path / "t")],
        env={**env, "PATH": os.pathsep.join([VENV_BIN, os.environ.get("PATH", "")])}, cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED  # the head is untouched
