"""Sweep files (``get_sweep()``) for ``launch.sweep``."""
