"""Sweeps: many ticket searches with Ray Tune + Optuna over a search space file (``search_spaces/*.yaml``).

* ``spec`` + ``parse``: the YAML format, parsed into a frozen ``SweepSpec``; ``checks``: every corner of the space
  validated up front (class split vs shard count, types, ranges);
* ``bundles``: a trial's placement-group bundles (2 + k on the Ray backend) from the k it sampled;
* ``trainable`` + ``state``: the trial function, reporting and checkpointing the ``Resume`` state per cycle;
* ``compare``: ``compare:``/``seeds:`` sweeps: each sampled recipe once per (seed, method), method-only settings
  reset where unread; ``searchers``: the Tune searchers that apply it (``Replicates``) and tell trials ASHA
  stopped to Optuna as pruned (``OptunaPruning``);
* ``tuner``: the Tuner (OptunaSearch, ASHA on cycles or percent sparsity, storage, failure retries) and its restore;
* ``trials``: trials.parquet (status, objective, Pareto flag) and the runs rows of stopped trials;
* ``lease`` + ``lease_stores``: one sweep per storage and name (``lease.json``, renewed while it runs, taken over
  by ``--resume`` once it is not; a compare-and-swap on local disks and on S3);
* ``driver`` + ``cli``: ``colt-ray sweep``.

Import submodules explicitly; only ``searchers`` imports Ray at the top, and only ``tuner`` imports it (lazily);
``driver`` and the trial function import Ray lazily too.
"""
