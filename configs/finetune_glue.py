"""Fine-tuning on GLUE with BERT's recipe, one config per task (the shared base: ``configs/common.py``).

    python -m launch.finetune --config=configs/finetune_glue.py:task=mrpc --config.train.init_from=<dir> \
        --config.data.data_dir=data/glue --workdir=workdirs/mrpc

``train.init_from`` is a pretraining workdir (or one of its ``checkpoints/<step>`` dirs), a Hugging Face
directory or one ``launch.export_hf`` wrote; the model size and tokenizer come from it. Variants after
the colon, comma-separated ``key=value``:

* ``task``: cola | sst2 | mrpc | stsb | qqp | mnli | qnli | rte | wnli.
* ``lr``: peak learning rate; the paper picks the best of 2e-5, 3e-5, 5e-5 on dev.

Recipe (Devlin et al., 2018): batch 32, 3 epochs, sequence length 128, AdamW with weight decay 0.01,
linear warmup over the first 10% of the steps then linear decay, dropout 0.1. Dev sets are scored with
the GLUE metrics (``bert_jax/metrics.py``); test sets give the GLUE server's submission files. Several
seeds: ``--config.seeds=0,1,2`` (mean and std in ``<workdir>/finetune_summary.json``).
"""

from __future__ import annotations

import ml_collections

from configs.common import finetune_config, parse_variant
from data_pipelines.finetune import glue

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
LEARNING_RATES = ("2e-5", "3e-5", "5e-5")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The GLUE config for ``arg`` = ``"task=...,lr=..."``."""
    variant = parse_variant(arg, {"task": "mrpc", "lr": "2e-5"})
    if variant["task"] not in GLUE_TASKS:
        raise ValueError(f"config variant task={variant['task']!r}: expected one of {GLUE_TASKS}")
    task = glue.get_glue_task(variant["task"])
    c = finetune_config(f"glue/{task.name}")
    c.variant = variant
    c.task.reader_options.on_malformed = "error"  # "skip": count and log malformed TSV rows instead.
    c.optimizer.learning_rate = float(variant["lr"])
    c.data.data_dir = "data/glue"  # download_glue_data.py layout: data/glue/MRPC/train.tsv, ...
    c.data.eval_splits = ",".join(s for s in task.splits if s.startswith("validation"))
    c.data.test_splits = ",".join(task.submission_files)
    return c
