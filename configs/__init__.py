"""Run configs (``get_config(arg)`` files), named by path: ``--config=configs/demo.py``.

After ``pip install``, ``bert-jax pretrain --config=demo.py`` (or ``configs/demo.py``) from any directory
names the file of this installed package when no such file exists there.
"""
