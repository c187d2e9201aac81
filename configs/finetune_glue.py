"""Fine-tuning on GLUE with BERT's recipe, one config per task; also the base of every fine-tuning config.

    python -m launch.finetune --config=configs/finetune_glue.py:task=mrpc --config.init_from=<dir> \
        --config.data.data_dir=data/glue --workdir=workdirs/mrpc

``init_from`` is a pretraining workdir (or one of its ``checkpoints/<step>`` dirs), a Hugging Face
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

from bert_jax.optim import default_optimizer_config
from bert_jax.sharding import default_sharding_config
from configs.pretrain import model_section, parse_variant, tokenizer_section, train_section
from data_pipelines.finetune import glue

GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
LEARNING_RATES = ("2e-5", "3e-5", "5e-5")


def base_config(task_name: str) -> ml_collections.ConfigDict:
    """The config every ``configs/finetune_*.py`` starts from, for a ``data_pipelines.finetune`` task name."""
    c = ml_collections.ConfigDict()
    c.init_from = ""  # Pretraining workdir / checkpoint dir, Hugging Face or exported dir; "" = scratch.
    c.seeds = "0"  # Comma-separated seeds; each runs in <workdir>/seed_<s> when there are several.
    c.task = ml_collections.ConfigDict()
    c.task.name = task_name  # A data_pipelines.finetune reader; its kind picks the head and the metrics.
    c.task.reader_options = ml_collections.ConfigDict()  # Keyword options of get_finetune_reader.
    c.task.pooling = "cls"  # Sentence vector of the classification heads: BERT's "cls" pooler, or "mean".
    c.model = model_section("base")  # From scratch: used as is. With init_from: only dtype, dropout, layout.
    c.model.dtype = "float32"
    c.tokenizer = tokenizer_section()
    c.tokenizer.vocab_file = ""  # "" = init_from's tokenizer (its vocab.txt, or its run config's).
    c.data = ml_collections.ConfigDict()
    c.data.data_dir = ""  # Folder of the task's original files (or TFDS data dir with source=tfds).
    c.data.source = "files"  # "files" or "tfds".
    c.data.files = ml_collections.ConfigDict()  # local_text only: split -> file, instead of data_dir.
    c.data.train_split = "train"
    c.data.eval_splits = "validation"  # Comma-separated; scored with the task's metrics.
    c.data.test_splits = ""  # Comma-separated; predicted only (GLUE submission files).
    c.data.max_seq_length = 128
    c.data.featurize_options = ml_collections.ConfigDict()  # The reader's featurize options.
    c.data.kfold = 0  # >= 2: k-fold cross-validation over the train split instead of eval_splits.
    c.data.folds = ""  # Comma-separated folds to run; "" = all.
    c.data.kfold_seed = 0  # Seed of the (label-stratified) fold assignment.
    c.decode = ml_collections.ConfigDict()  # SQuAD answer decoding (bert_jax/squad_decoding.py).
    c.decode.n_best_size = 20
    c.decode.max_answer_length = 30
    c.decode.null_score_diff_threshold = 0.0
    c.optimizer = default_optimizer_config()  # AdamW, weight decay 0.01, clip 1.0; steps set per run.
    c.optimizer.learning_rate = 2e-5
    c.sharding = default_sharding_config()
    c.train = train_section()
    del c.train.init_from  # One place says where to start: the top-level init_from.
    c.train.init_mode = "params"  # The encoder's params; the task head starts fresh.
    c.train.batch_size = 32
    c.train.num_epochs = 3.0
    c.train.num_steps = 0  # 0 = ceil(train rows x num_epochs / batch_size).
    c.train.warmup_fraction = 0.1  # Linear warmup over this share of the steps, then linear decay to 0.
    c.train.eval_batch_size = 64
    c.train.eval_every = 0  # 0 = evaluate once, at the end.
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 1
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The GLUE config for ``arg`` = ``"task=...,lr=..."``."""
    variant = parse_variant(arg, {"task": "mrpc", "lr": "2e-5"})
    if variant["task"] not in GLUE_TASKS:
        raise ValueError(f"config variant task={variant['task']!r}: expected one of {GLUE_TASKS}")
    task = glue.get_glue_task(variant["task"])
    c = base_config(f"glue/{task.name}")
    c.variant = variant
    c.task.reader_options.on_malformed = "error"  # "skip": count and log malformed TSV rows instead.
    c.optimizer.learning_rate = float(variant["lr"])
    c.data.data_dir = "data/glue"  # download_glue_data.py layout: data/glue/MRPC/train.tsv, ...
    c.data.eval_splits = ",".join(s for s in task.splits if s.startswith("validation"))
    c.data.test_splits = ",".join(task.submission_files)
    return c
