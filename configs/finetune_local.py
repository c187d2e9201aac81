"""Fine-tuning a text classifier on your own files (TSV, JSONL or fastText lines).

    python -m launch.finetune --config=configs/finetune_local.py --config.train.init_from=<dir> \
        --config.data.data_dir=my_data --workdir=workdirs/my_classifier

``data.data_dir`` holds ``train.<ext>``, ``validation.<ext>`` and optionally ``test.<ext>`` (predicted
only, with ``--config.data.test_splits=test``), each ``.tsv`` (header with ``text``, optional
``text_b``, ``label``), ``.jsonl`` (``{"text", "text_b", "label"}``) or fastText ``.txt``
(``__label__pos some text``). Single files anywhere: ``--config.data.files.train=path`` (and
``.validation``). The label set is the sorted labels of the train file, or
``--config.task.reader_options.label_names=neg,pos``. No validation file? Cross-validate:
``--config.data.kfold=5``. Metric: accuracy; ``predictions/<split>/predictions.tsv``.
"""

from __future__ import annotations

import ml_collections

from configs.common import finetune_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = finetune_config("local_text")
    c.task.reader_options.label_names = ""  # Comma-separated class names; "" = the train file's labels.
    c.task.reader_options.encoding = "utf-8"  # Text encoding of the files.
    c.task.reader_options.on_unknown_label = "error"  # "skip": count and log rows with other labels.
    c.data.files.train = ""  # Explicit files (override data_dir's <split>.<ext>); "" = unused.
    c.data.files.validation = ""
    c.optimizer.learning_rate = 3e-5
    return c
