"""Config: flat form, run ids (pinned), validation messages."""

import pytest

from colt_ray.core.config import RunConfig, flat_field_owners, validate
from colt_ray.core.errors import ConfigError


@pytest.mark.parametrize(
    "flat,run_id",
    [
        ({}, "44136fa355b3"),
        ({"method": "imp", "rate": 0.2, "dataset": "npz"}, "9d2dbb084f37"),
        ({"shards": 4, "lr": 0.1}, "31ad7636b678"),
    ],
)
def test_run_ids_are_pinned_so_new_fields_with_defaults_keep_old_ids(flat, run_id):
    assert RunConfig.from_flat(flat).run_id() == run_id


def test_resources_do_not_change_the_run_id():
    base = RunConfig.from_flat({"shards": 4})
    assert (
        RunConfig.from_flat({"shards": 4, "backend": "ray", "threads": 2, "progress": False}).run_id() == base.run_id()
    )


def test_amp_is_a_recipe_setting_in_the_run_id():
    # bfloat16 changes which weights are pruned: a run with --amp is another run (and a sweep YAML key)
    amp = RunConfig.from_flat({"amp": True, "device": "cuda"})
    assert amp.recipe.amp is True
    assert amp.run_id() != RunConfig.from_flat({"device": "cuda"}).run_id() == RunConfig().run_id()
    validate(RunConfig.from_flat({"amp": True, "device": "cuda", "backend": "batched"}))
    validate(RunConfig.from_flat({"amp": True, "device": "cuda", "backend": "ray", "gpus_per_shard": 0.5}))


def test_flat_round_trip_and_list_fields():
    cfg = RunConfig.from_flat({"milestones": [20, 30], "prune_groups": ["conv"], "target_sparsity": 0.9, "lr": 1})
    flat = cfg.to_flat()
    assert flat["milestones"] == [20, 30] and flat["prune_groups"] == ["conv"] and flat["lr"] == 1.0
    assert RunConfig.from_flat(flat) == cfg
    assert set(flat) == set(flat_field_owners())


def test_unknown_flat_key_names_it_and_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"^prune_rat: unknown setting; valid: .*\bprune_rate\b"):
        RunConfig.from_flat({"prune_rat": 0.1})


def test_method_defaults_for_prune_rate_cycles_and_vote():
    assert RunConfig.from_flat({"method": "colt"}).prune_rate == 0.15
    assert RunConfig.from_flat({"method": "imp"}).prune_rate == 0.20
    assert RunConfig().max_cycles == 5
    assert RunConfig.from_flat({"target_sparsity": 0.9}).max_cycles is None
    assert RunConfig.from_flat({"shards": 3}).vote == 3
    assert RunConfig.from_flat({"method": "imp", "shards": 3}).num_shards == 1


@pytest.mark.parametrize(
    "flat,message",
    [
        ({"vote": 3}, "vote: must be in [1, shards=2]"),
        ({"schedule": "step"}, "milestones: schedule 'step' needs"),
        ({"method": "jackpot", "rewind_step": 10}, "rewind-step: is a COLT/IMP setting"),
        ({"method": "imp", "shard_overlap": 0.5}, "shard-overlap: is a COLT setting; IMP trains no shards"),
        ({"method": "imp", "shard_steps": "match"}, "shard-steps: is a COLT setting"),
        ({"shard_steps": "match", "backend": "batched"}, "shard-steps: is not supported by stacked shard training"),
        ({"rewind_step": 5, "shards_per_actor": 2, "backend": "ray"}, "rewind-step: is not supported by stacked"),
        ({"rewind_step": 5, "tweaks": "distill"}, "tweaks: distill does not go with COLT's --rewind-step"),
        ({"prune_groups": ["conv", "output"]}, "prune-groups: 'output' cannot be pruned under a class split"),
        ({"prune_groups": ["attention"]}, "prune-groups: unknown 'attention'"),
        ({"val_fraction": 1.0}, "val-fraction: must be in [0, 1)"),
        ({"gpus_per_shard": -1.0}, "gpus-per-shard: must be >= 0"),
        ({"amp": True, "device": "cpu", "backend": "local"}, "amp: needs --device cuda"),
    ],
)
def test_validation_messages_name_the_field(flat, message):
    with pytest.raises(ConfigError) as err:
        validate(RunConfig.from_flat(flat))
    assert message in str(err.value)
