"""The Ray layer: the only package that imports ``ray`` (the core never does).

* ``actors``: ``ShardTrainer`` (one trainer of a run, kept across cycles), the one actor factory
  ``create_actor``, and the trainer pools (``RayPool`` of actors, ``LocalPool`` in-process).
* ``coordinator``: ``Coordinator``, one per run: theta_0 in the object store, its trainers, the ticket
  evaluation, one record per cycle to a sink.
* ``resources``: what each actor asks Ray for, placement-group bundles, GPU fallback.
* ``backend``: ``run_ray`` (the CLI's ``--backend ray``) and ``run_on_ray`` (in-process coordinator, for a
  Tune trial).

Import submodules explicitly (``from colt_ray.parallel.backend import run_on_ray``).
"""
