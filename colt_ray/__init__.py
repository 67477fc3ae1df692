"""colt_ray: find sparse lottery tickets (COLT, IMP and relatives) and search how to find them, on Ray."""

__version__ = "0.1.0"
