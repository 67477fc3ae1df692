"""Every numeric setting's declared range is enforced the same way everywhere: a value outside it (and, for
floats, nan and inf) given as a `colt-ray ticket` flag, under a sweep space's `fixed:`, or as a bound of its
`search:` range is exit 2 with one line naming the setting, and nothing written."""

from __future__ import annotations

import math

import pytest
import yaml

from colt_ray.cli import main as colt_ray
from colt_ray.core.config import flat_field_owners, setting_of, value_type
from colt_ray.core.settings import flag_name
from colt_ray.parallel.sweep.cli import main as sweep

FAST = ["--dataset", "digits", "--epochs", "1", "--cycles", "1", "--backend", "local", "--no-progress"]
NUMERIC = sorted(n for n in flat_field_owners() if value_type(n) in (int, float))


def outside(name: str) -> list:
    """Values the setting's declared range refuses: just past each end, and nan/inf for a float."""
    s, kind = setting_of(name), value_type(name)
    step = 1 if kind is int else 0.5
    bad = []
    if s.lo is not None:
        bad.append(kind(s.lo) if s.lo_open else kind(s.lo - step))
    if s.hi is not None:
        bad.append(kind(s.hi) if s.hi_open else kind(s.hi + step))
    if kind is float:
        bad += [math.nan, math.inf, -math.inf]
    return bad


def test_every_numeric_setting_declares_a_range():
    undeclared = [n for n in NUMERIC if setting_of(n).lo is None and setting_of(n).hi is None]
    assert not undeclared, f"declare lo/hi for: {undeclared}"


def one_line(capsys, name: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("colt-ray: error: "), (name, err)
    return err[0]


@pytest.mark.parametrize("name", NUMERIC)
def test_a_value_outside_a_settings_range_is_refused_as_a_flag_and_in_a_sweep_space(name, tmp_path, capsys):
    base = {"name": "r", "fixed": {"dataset": "digits", "arch": "conv2", "epochs": 1, "cycles": 1},
            "search": {"lr": {"logfloat": [0.01, 0.1]}}, "objectives": [{"metric": "acc"}],
            "allow_test_selection": True}  # fmt: skip
    out = tmp_path / "out"
    for value in outside(name):
        text = "nan" if isinstance(value, float) and math.isnan(value) else str(value)
        rc = colt_ray(["ticket", *FAST, f"--{flag_name(name)}={text}", "--out", str(out)])
        line = one_line(capsys, name)
        assert rc == 2 and f": {flag_name(name)}: " in line, (name, value, line)
        assert not out.exists()

        fixed = {**base, "fixed": {**base["fixed"], name: value}}
        if name == "lr":
            fixed["search"] = {"prune_rate": {"float": [0.1, 0.2]}}
        space = tmp_path / "fixed.yaml"
        space.write_text(yaml.safe_dump(fixed))
        rc = sweep([str(space), "--storage", str(out)])
        line = one_line(capsys, name)
        assert rc == 2 and f"fixed.{name}" in line, (name, value, line)
        assert not out.exists()

        if math.isfinite(value):  # a searched range with the bad value as one end
            low = setting_of(name).lo
            lo, hi = (value, value + 1) if low is not None and value <= low else (value - 1, value)
            kind = "int" if value_type(name) is int else "float"
            searched = {**base, "search": {name: {kind: [lo, hi]}}}
            if name == "lr":
                searched["fixed"] = dict(base["fixed"])
            space = tmp_path / "search.yaml"
            space.write_text(yaml.safe_dump(searched))
            rc = sweep([str(space), "--storage", str(out)])
            line = one_line(capsys, name)
            assert rc == 2 and f"search.{name}" in line, (name, value, line)
            assert not out.exists()
