"""Thin command-line entry points: each defines its flags and runs one library function through
``bert_jax.entry`` (logging, host heap, multi-process join, one-line errors).

Run them as modules from the repository root, e.g. ``python -m launch.export_hf --help``, or as
``bert-jax export-hf --help`` after ``pip install``.
"""
