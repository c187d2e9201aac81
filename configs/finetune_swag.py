"""Fine-tuning on SWAG (multiple choice: the right one of four endings).

    python -m launch.finetune --config=configs/finetune_swag.py --config.train.init_from=<dir> \
        --config.data.data_dir=data/swag --workdir=workdirs/swag

Reads ``train.csv`` / ``val.csv`` (and ``test.csv`` with ``--config.data.test_splits=test``) of the
SWAG release, or ``<split>.jsonl``. Each ending is scored from the pooled output of
``[CLS] context [SEP] stem ending [SEP]``; the loss is the cross-entropy over the four. Recipe of the
paper: lr 2e-5, batch 16, 3 epochs, sequence length 128. Dev accuracy; ``predictions/<split>/predictions.tsv``.
"""

from __future__ import annotations

import ml_collections

from configs.common import finetune_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = finetune_config("swag")
    c.data.data_dir = "data/swag"
    c.optimizer.learning_rate = 2e-5
    c.train.batch_size = 16
    c.train.eval_batch_size = 32
    return c
