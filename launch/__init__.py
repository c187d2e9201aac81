"""Thin command-line entry points: each parses absl flags and calls one library function.

Run them as modules from the repository root, e.g. ``python -m launch.export_hf --help``.
"""
