"""Fine-tuning on SQuAD v1.1 or v2.0 with BERT's recipe.

    python -m launch.finetune --config=configs/finetune_squad.py:version=v2.0 --config.train.init_from=<dir> \
        --config.data.data_dir=data/squad --workdir=workdirs/squad2

Reads the official ``train-v1.1.json`` / ``dev-v1.1.json`` (``-v2.0`` for v2.0) from ``data.data_dir``
(or TFDS ``squad/*`` with ``--config.data.source=tfds``). Recipe: lr 3e-5, batch 32, 2 epochs, windows
of 384 tokens every 128 (questions cut to 64), n-best 20, answers up to 30 tokens. The dev set is
scored with the official EM/F1 (v2.0 also HasAns/NoAns and the best no-answer threshold, to pass as
``--config.decode.null_score_diff_threshold`` on a second run); ``predictions/validation/`` holds
``predictions.json``, ``nbest_predictions.json`` and (v2.0) ``null_odds.json`` for the official scripts.
"""

from __future__ import annotations

import ml_collections

from configs.common import finetune_config, parse_variant
from data_pipelines.finetune import squad


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The SQuAD config for ``arg`` = ``"version=v1.1"`` or ``"version=v2.0"``."""
    variant = parse_variant(arg, {"version": "v1.1"})
    if variant["version"] not in squad.VERSIONS:
        raise ValueError(f"config variant version={variant['version']!r}: expected one of {squad.VERSIONS}")
    c = finetune_config(f"squad/{variant['version']}")
    c.variant = variant
    c.data.data_dir = "data/squad"
    c.data.max_seq_length = 384
    c.data.featurize_options.doc_stride = 128  # Tokens between the starts of a context's windows.
    c.data.featurize_options.max_query_length = 64  # Longer questions are cut (and counted).
    c.optimizer.learning_rate = 3e-5
    c.train.num_epochs = 2.0
    c.train.eval_batch_size = 64
    return c
