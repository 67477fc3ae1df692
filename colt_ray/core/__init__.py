"""The pure-PyTorch core: models, data, masks and pruning, the training loop and the ticket methods.

This package imports torch and numpy only (never ray, optuna or pyarrow); a test enforces it. Submodules are
imported explicitly (``from colt_ray.core.pruning import mask``) so importing the package itself is cheap.
"""
