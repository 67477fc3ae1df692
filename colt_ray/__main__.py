from colt_ray.cli import entry

entry()
