"""The Ray layer: the only package that imports ``ray`` (the core never does).

* ``actors``: ``ShardTrainer`` (one trainer of a run, kept across cycles; ``BatchedShardTrainer`` for M
  stacked shards), the one actor factory ``create_actor``, and the pools (``RayPool``, ``LocalPool``).
* ``coordinator``: ``Coordinator``, one per run, in the driver: data and theta_0 in the object store, its
  trainers, one record per cycle to a sink. ``evaluation``: the scheduler of COLT's ticket evaluations.
* ``resources``: what each actor asks Ray for, placement-group bundles, GPU fallback. ``cluster``: starting
  or joining Ray.
* ``backend``: ``open_coordinator`` (the CLI's ``--backend ray``, a sweep trial) and ``run_on_ray``.

Import submodules explicitly (``from colt_ray.parallel.backend import run_on_ray``).
"""
