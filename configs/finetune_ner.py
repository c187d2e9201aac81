"""Fine-tuning on CoNLL-2003 English NER (token classification on each word's first sub-token).

    python -m launch.finetune --config=configs/finetune_ner.py --config.train.init_from=<dir> \
        --config.data.data_dir=data/conll2003 --workdir=workdirs/ner

Reads ``train.txt`` / ``valid.txt`` / ``test.txt`` (IOB2) or ``eng.train`` / ``eng.testa`` / ``eng.testb``
(IOB1) from ``data.data_dir`` (or TFDS ``conll2003``). Both dev and test are scored with entity-level
precision/recall/F1 as conlleval computes them; ``predictions/<split>/predictions.conll`` holds
``word gold predicted`` lines for conlleval itself. Sentences longer than a row are split into windows
of whole words. Recipe: lr 5e-5, batch 32, 3 epochs, sequence length 128.
"""

from __future__ import annotations

import ml_collections

from configs.common import finetune_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = finetune_config("conll2003")
    c.data.data_dir = "data/conll2003"
    c.data.eval_splits = "validation,test"
    c.data.featurize_options.long_sentences = "window"  # Or "truncate" (dropped words are counted).
    c.optimizer.learning_rate = 5e-5
    return c
