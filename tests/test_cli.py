"""End-to-end `colt-ray ticket` / `transfer` on digits, and every bad input -> one line, exit 2, nothing written."""

import json
import os
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest
import test_sweep

from colt_ray.cli import build_parser, config_from_args, main

FAST = ["--dataset", "digits", "--epochs", "1", "--backend", "local", "--no-progress"]

ray_tag = test_sweep.ray_tag  # a private RAY_TMPDIR whose processes are killed afterwards


def run_ok(argv):
    assert main(argv) == 0


@pytest.fixture(scope="module")
def colt_imp_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    run_ok(["ticket", "--method", "colt", "--cycles", "2", "--out", str(out), *FAST])
    run_ok(["ticket", "--method", "imp", "--cycles", "2", "--out", str(out), *FAST])
    return out


def test_colt_and_imp_write_runs_cycles_layers_and_tickets(colt_imp_out):
    runs = pd.read_parquet(colt_imp_out / "runs")
    assert sorted(runs["method"]) == ["colt", "imp"]
    assert set(runs["status"]) == {"completed"}
    cycles = pd.read_parquet(colt_imp_out / "cycles")
    colt_id = runs.loc[runs.method == "colt", "run_id"].item()
    imp_id = runs.loc[runs.method == "imp", "run_id"].item()
    colt = cycles[cycles.run_id == colt_id]
    # COLT: a ticket row per cycle 0..2, and 2 shard rows in the cycles that trained shards (0, 1)
    assert sorted(colt[colt.shard.isna()].cycle) == [0, 1, 2]
    assert sorted(colt[colt.shard.notna()].cycle) == [0, 0, 1, 1]
    imp = cycles[cycles.run_id == imp_id]
    assert sorted(imp.cycle) == [0, 1, 2] and imp.shard.isna().all()
    assert imp.sort_values("cycle").sparsity.is_monotonic_increasing
    layers = pq.read_table(colt_imp_out / "layers").to_pandas()
    assert set(layers.group) == {"conv", "linear"}
    assert len(layers[(layers.run_id == colt_id) & (layers.cycle == 1)]) == 4  # conv2: 2 conv + 2 hidden linear
    tickets = sorted(p.name for p in (colt_imp_out / "tickets" / colt_id).iterdir())
    # COLT's tickets all rewind to theta_0: it is stored once, beside them
    assert tickets == [
        "cycle-0000.safetensors",
        "cycle-0001.safetensors",
        "cycle-0002.safetensors",
        "theta0.safetensors",
    ]
    row = runs.loc[runs.method == "colt"].iloc[0]
    assert row.final_sparsity == pytest.approx(colt[colt.shard.isna() & (colt.cycle == 2)].sparsity.item())


def test_transfer_a_digits_ticket_to_synthetic_data(colt_imp_out, tmp_path, capsys):
    ticket = next((colt_imp_out / "tickets").glob("*/cycle-0002.safetensors"))
    out = tmp_path / "t.json"
    run_ok(["transfer", str(ticket), "--dataset", "synthetic", "--epochs", "1", "--no-progress", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["source_dataset"] == "digits" and result["dataset"] == "synthetic"
    assert 0.0 <= result["acc_best"] <= 1.0 and result["sparsity"] > 0.2


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["ticket", "--help"])
    text = capsys.readouterr().out
    for option in [
        "--prune-rate",
        "--shards",
        "--split",
        "--cycles",
        "--target-sparsity",
        "--epochs",
        "--lr",
        "--seed",
        "--out",
        "--backend",
    ]:
        assert option in text
    assert "(default: 0.05)" in text  # lr


def test_amp_flag_sets_the_recipe_setting():
    parse = build_parser().parse_args
    assert config_from_args(parse(["ticket", "--amp", "--device", "cuda"])).recipe.amp is True
    assert config_from_args(parse(["ticket", "--amp", "--no-amp"])).recipe.amp is False
    assert config_from_args(parse(["ticket"])).recipe.amp is False
    assert config_from_args(parse(["transfer", "t.safetensors", "--dataset", "digits", "--amp"])).recipe.amp is True


BAD = [
    (["--prune-rate", "1.5"], "prune-rate: must be in (0, 1)"),
    (["--prune-rate", "0"], "prune-rate: must be in (0, 1)"),
    (["--shards", "0"], "shards: must be >= 1"),
    (["--shards", "11", "--split", "class"], "shards: a class split of 10 classes allows at most 10"),
    (["--cycles", "0"], "cycles: must be >= 1"),
    (["--target-sparsity", "1.0"], "target-sparsity: must be in (0, 1)"),
    (["--method", "lth"], "method: unknown 'lth'; valid: colt"),
    (["--dataset", "imagenet"], "dataset: unknown 'imagenet'; valid: cifar10"),
    (["--arch", "alexnet"], "arch: unknown 'alexnet'; valid:"),
    (["--arch", "vgg16"], "vgg16 does not fit input 1x8x8"),
    (["--dataset", "cifar10"], "cifar10 needs --data-root"),
    (["--epochs", "many"], "invalid int value"),
    (["--amp"], "amp: needs --device cuda"),  # --device auto may fall back to a CPU
    (["--amp", "--backend", "batched", "--device", "cpu"], "amp: needs --device cuda"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(extra, message, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["ticket", "--out", str(out), "--dataset", "digits", "--backend", "local", "--no-progress", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("colt-ray: error: ") and "\n" not in err
    assert message in err
    assert not out.exists()


def test_missing_file_in_a_dataset_root_is_named(tmp_path, capsys):
    root = tmp_path / "cifar"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    out = tmp_path / "out"
    assert (
        main(["ticket", "--dataset", "cifar10", "--data-root", str(root), "--out", str(out), "--backend", "local"]) == 2
    )
    err = capsys.readouterr().err
    assert "data_batch_1" in err and err.count("\n") == 1
    assert not out.exists()


def test_unwritable_output_directory_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    assert main(["ticket", "--out", str(blocker / "sub"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "out:" in err and "not writable" in err
    assert blocker.read_text() == "not a directory"


def test_corrupt_ticket_and_ticket_of_another_arch_are_refused(colt_imp_out, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["transfer", str(bad), "--dataset", "digits"]) == 2
    assert "corrupt" in capsys.readouterr().err
    ticket = next((colt_imp_out / "tickets").glob("*/cycle-0001.safetensors"))
    assert main(["transfer", str(ticket), "--dataset", "digits", "--arch", "lenet300"]) == 2
    assert "belongs to arch 'conv2'" in capsys.readouterr().err
    # conv2's hidden layer size follows the input size: an 8x8 ticket cannot take 28x28 inputs
    npz = tmp_path / "m.npz"
    import numpy as np

    x = np.zeros((20, 28, 28), np.uint8)
    y = np.arange(20) % 10
    np.savez(npz, x_train=x, y_train=y, x_test=x, y_test=y)
    assert main(["transfer", str(ticket), "--dataset", "npz", "--data-root", str(npz)]) == 2
    err = capsys.readouterr().err
    assert "ticket:" in err and "shape" in err and err.count("\n") == 1


def test_a_best_settings_command_reproduces_its_run_bit_for_bit(tmp_path):
    """The report's "ready to run" line for a run with full-precision settings and a seed of its own, run as
    printed, gives the same run id and the same tickets (``%g`` wrote lr 0.123457: another run)."""
    import shlex

    from colt_ray.results.commands import ticket_command
    from colt_ray.results.reader import load_results

    first, again = tmp_path / "first", tmp_path / "again"
    settings = ["--lr", "0.1234567891", "--prune-rate", "0.2718281828", "--seed", "7", "--cycles", "1"]
    run_ok(["ticket", "--method", "colt", "--shards", "2", *settings, "--out", str(first), *FAST])
    res = load_results(str(first))
    command = ticket_command(res.runs.iloc[0].to_dict(), out=str(again))
    assert "--lr 0.1234567891" in command and "--seed 7" in command
    argv = shlex.split(command)
    assert argv[:2] == ["colt-ray", "ticket"]
    run_ok([*argv[1:], "--dataset", "digits", "--backend", "local", "--no-progress"])  # as printed (+ quiet)
    rerun = load_results(str(again))
    assert list(rerun.runs["run_id"]) == list(res.runs["run_id"])
    keys = ["run_id", "cycle", "sparsity", "kept_weights", "acc_best", "acc_final"]
    assert rerun.tickets()[keys].equals(res.tickets()[keys])


def test_a_completed_run_is_reused_and_overwrite_runs_it_again(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["ticket", "--method", "colt", "--cycles", "1", "--out", str(out), *FAST]
    run_ok(argv)
    (part,) = (out / "runs").glob("*.parquet")
    first, stamp = capsys.readouterr().out, part.stat().st_mtime_ns
    run_id = re.search(r"done: run (\w+)", first).group(1)
    run_ok(argv)
    again = capsys.readouterr().out
    assert again.startswith(f"run {run_id}: already completed in {out} (sparsity ") and "--overwrite" in again
    assert "done:" not in again and part.stat().st_mtime_ns == stamp  # nothing trained, nothing written
    run_ok([*argv, "--overwrite"])
    assert f"done: run {run_id}," in capsys.readouterr().out and part.stat().st_mtime_ns != stamp
    run_ok([*argv[: -len(FAST)], *FAST, "--seed", "1"])  # other settings: another run id, trained
    assert "done: run " in capsys.readouterr().out and len(list((out / "runs").glob("*.parquet"))) == 2


def test_version_and_a_whole_top_level_description_without_markup(capsys):
    from colt_ray import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"colt-ray {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    description = " ".join(text.split("\n\n")[1].split())
    assert "``" not in description and description.endswith("exit status 2.")
    for command in ("ticket", "transfer", "report", "sweep", "status", "compact", "export"):
        assert f"({command})" in description, command


def test_an_imp_level_retrained_by_a_tweak_records_which_training_proposed_the_next_mask(tmp_path):
    from colt_ray.results.reader import load_results

    plain, tweaked = tmp_path / "plain", tmp_path / "tweaked"
    run_ok(["ticket", "--method", "imp", "--cycles", "1", "--out", str(plain), *FAST])
    run_ok(["ticket", "--method", "imp", "--cycles", "1", "--tweaks", "label-smoothing", "--out", str(tweaked), *FAST])
    level = load_results(str(plain)).cycles
    both = load_results(str(tweaked)).cycles
    assert level["mask_sample_epochs"].isna().all()
    assert list(both["mask_sample_epochs"]) == list(level["sample_epochs"])  # the level training's share
    assert list(both["sample_epochs"]) == [2 * s for s in level["sample_epochs"]]  # + the retraining


@pytest.mark.slow
def test_an_error_found_after_ray_started_is_one_line_whatever_its_workers_print(tmp_path, ray_tag):
    """An architecture that does not fit the data is found once a local Ray is up (the data loads beside its
    start). Ray's workers still starting when it is stopped dumped their stacks on SIGTERM, 5-20 lines the
    driver forwarded before the error (about one run in six); the error path stops Ray with them unshown.
    Run as a user runs it, three times: each time exactly the one line, exit 2, nothing written."""
    import subprocess
    import sys

    env = {**os.environ, "RAY_TMPDIR": ray_tag}
    argv = ["ticket", "--method", "colt", "--arch", "vgg16", "--cycles", "1", "--epochs", "1", "--backend", "ray",
            "--address", "local", "--out", str(tmp_path / "out")]  # fmt: skip
    for _ in range(3):
        done = subprocess.run([sys.executable, "-m", "colt_ray", *argv], env=env, capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.splitlines() == [
            "colt-ray: error: arch: vgg16 does not fit input 1x8x8 of this dataset: needs at least 32x32"
        ], done.stderr
        assert not (tmp_path / "out").exists()


def test_runs_on_two_data_files_of_one_dataset_kind_stay_apart_in_the_report(tmp_path):
    """Each run records the file it read and a fingerprint of its content; the report groups and titles by
    them where one dataset name covers different files (not pooled into one npz group)."""
    import numpy as np

    from colt_ray.results.reader import load_results
    from colt_ray.results.report import build_tables

    out = tmp_path / "r"
    for name, seed in (("a.npz", 0), ("b.npz", 1)):
        rng = np.random.default_rng(seed)
        np.savez(tmp_path / name, x_train=rng.random((90, 8, 8), dtype=np.float32), y_train=np.arange(90) % 3,
                 x_test=rng.random((30, 8, 8), dtype=np.float32), y_test=np.arange(30) % 3)  # fmt: skip
        run_ok(["ticket", "--method", "imp", "--cycles", "1", "--dataset", "npz", "--data-root",
                str(tmp_path / name), "--arch", "lenet300", "--out", str(out), *FAST[2:]])  # fmt: skip
    runs = load_results(str(out)).runs.set_index("data_file")
    assert sorted(runs.index) == ["a.npz", "b.npz"]
    fps = runs["data_fingerprint"]
    assert fps.str.fullmatch(r"[0-9a-f]{12}").all() and fps["a.npz"] != fps["b.npz"]
    best = build_tables(load_results(str(out)))["best_tickets"]
    assert sorted(best["dataset"]) == [f"npz (a.npz@{fps['a.npz'][:6]})", f"npz (b.npz@{fps['b.npz'][:6]})"]
    run_ok(["ticket", "--method", "imp", "--cycles", "1", "--out", str(tmp_path / "digits"), *FAST])
    plain = load_results(str(tmp_path / "digits"))
    assert plain.runs["data_file"].isna().all()  # an embedded dataset
    assert list(build_tables(plain)["best_tickets"]["dataset"]) == ["digits"]


def in_a_terminal(argv: list[str], env: dict) -> str:
    """Run ``colt-ray argv`` with stdout and stderr on a pseudo-terminal of 120 x 40; what the terminal got."""
    import fcntl
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "colt_ray", *argv], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0, b"".join(chunks)[-3000:]
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bars_in_a_terminal_on_every_backend_and_plain_lines_in_a_log(tmp_path, ray_tag):
    """In a terminal, each training's bar, its accuracy named by split (test_acc here: no validation split),
    on the local backend and on Ray (the actors' bars drawn in the driver's terminal); in a log (stderr a
    file), no bar frames at all, only the per-cycle lines."""
    import subprocess
    import sys

    env = {**os.environ, "RAY_TMPDIR": ray_tag}
    run = ["ticket", "--method", "colt", "--shards", "2", "--cycles", "1", "--epochs", "2", "--dataset", "digits"]
    local = in_a_terminal([*run, "--backend", "local", "--out", str(tmp_path / "l")], env)
    assert re.search(r"cycle 0 shard 1 *:.*\d+/2 .*epoch.*test_acc=0\.\d{3}", local), local[-2000:]
    on_ray = in_a_terminal([*run, "--backend", "ray", "--address", "local", "--out", str(tmp_path / "r")], env)
    assert re.search(r"cycle 0 shard [01] loss=[0-9.]+ test_acc=0\.\d{3}", on_ray), on_ray[-2000:]
    logged = subprocess.run([sys.executable, "-m", "colt_ray", *run, "--backend", "local", "--out",
                             str(tmp_path / "f")], env=env, capture_output=True, text=True)  # fmt: skip
    assert logged.returncode == 0 and "\r" not in logged.stderr and "epoch/s" not in logged.stderr
    assert re.search(r"^cycle 1 \| sparsity ", logged.stderr, re.M), logged.stderr


def test_the_runs_table_records_the_settings_a_method_resolved_and_their_lines_keep_the_run_id(tmp_path):
    """``prune_rate``, ``vote`` and ``cycles`` left to the method are stored as the values used (not null, which
    ``groupby`` drops); the best-settings line still gives the run's own id (no flag for a default, a flag for
    a value given explicitly, even one equal to the default)."""
    import shlex

    from colt_ray.results.commands import ticket_command
    from colt_ray.results.reader import load_results

    out = tmp_path / "r"
    base = ["ticket", "--out", str(out), *FAST, "--epochs", "0"]
    run_ok([*base, "--method", "colt", "--shards", "2"])  # every resolved setting left to the method
    run_ok([*base, "--method", "colt", "--shards", "2", "--prune-rate", "0.15", "--cycles", "5", "--seed", "3"])
    run_ok([*base, "--method", "imp", "--cycles", "1"])
    runs = load_results(str(out)).runs.set_index("run_id")
    assert len(runs) == 3
    by_seed_method = {(r.method, r.seed): r for r in runs.itertuples()}
    colt, explicit, imp = by_seed_method["colt", 42], by_seed_method["colt", 3], by_seed_method["imp", 42]
    assert (colt.prune_rate, colt.vote, colt.cycles) == (0.15, 2, 5)
    assert (explicit.prune_rate, explicit.vote, explicit.cycles) == (0.15, 2, 5)
    assert (imp.prune_rate, imp.cycles) == (0.2, 1) and pd.isna(imp.vote)  # IMP has no vote
    assert runs.groupby("prune_rate").size().to_dict() == {0.15: 2, 0.2: 1}
    for run_id, row in runs.iterrows():
        command = ticket_command({"run_id": run_id, **row.to_dict()}, out="o")
        args = build_parser().parse_args(shlex.split(command)[1:])
        assert config_from_args(args).run_id() == run_id, command
        assert ("--prune-rate" in command) == (run_id == explicit.Index)


def test_a_warm_up_that_fills_the_training_is_left_out_with_a_note_or_refused(tmp_path, capsys):
    """The default 1-epoch warm-up in a 1-epoch training would keep the lr below its peak throughout (near
    chance accuracy): it is left out, and the command says so in one line; one given explicitly is refused."""
    from colt_ray.core.config import RecipeConfig
    from colt_ray.core.train import lr_factor

    short, long = RecipeConfig(epochs=1, schedule="constant"), RecipeConfig(epochs=3, schedule="constant")
    assert (short.warmup, long.warmup) == (0.0, 1.0)
    assert lr_factor(0, 10, short) == 1.0 and lr_factor(0, 10, long) == 0.1  # (step + 1) / 10 warm-up steps
    assert (
        short.warmup_note().startswith("warmup-epochs: the default 1-epoch warm-up would fill")
        and not long.warmup_note()
    )
    # it trains as --warmup-epochs 0 does, under that run id (not the id it had when the warm-up filled it)
    from colt_ray.core.config import RunConfig

    left_out = RunConfig(recipe=RecipeConfig(epochs=1))
    assert left_out.run_id() == RunConfig(recipe=RecipeConfig(epochs=1, warmup_epochs=0.0)).run_id()
    assert left_out.recorded_flat()["warmup_epochs"] == 0.0
    out = tmp_path / "r"
    run_ok(["ticket", "--out", str(out), *FAST, "--cycles", "1"])
    printed = capsys.readouterr().out
    notes = [line for line in printed.splitlines() if line.startswith("note: warmup-epochs")]
    assert len(notes) == 1
    # the summary counts cycles as the records do (cycle 0 is the dense training) and names its accuracy
    assert re.search(r"done: run \w+, cycles 0-1 \(cycle 0 dense, then 1 prune round\); reported ticket: cycle 1, "
                     r"sparsity 0\.\d{4}, test acc_best 0\.\d{4} \(no validation split", printed)  # fmt: skip
    bad = tmp_path / "bad"
    assert main(["ticket", "--out", str(bad), *FAST, "--epochs", "2", "--warmup-epochs", "2.5"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("colt-ray: error: warmup-epochs: 2.5 fills the whole 2-epoch training") and err.count("\n") == 1
    )
    assert not bad.exists()
