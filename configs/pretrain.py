"""BERT pretraining with the recipe of Devlin et al. (2018), in named variants.

Launch (any field can be overridden with ``--config.<field>=<value>``):

    python -m launch.pretrain --config=configs/pretrain.py:size=base,phase=1 --workdir=gs://BUCKET/bert-base
    python -m launch.pretrain --config=configs/pretrain.py:size=base,phase=2 --workdir=gs://BUCKET/bert-base-p2 \
        --config.train.init_from=gs://BUCKET/bert-base

Variants after the colon, comma-separated ``key=value``:

* ``size``: tiny | mini | small | medium | base | large (``bert_jax.config.MODEL_SIZES``).
* ``phase``: 1 = sequence length 128 for the first 90% of the steps; 2 = length 512 for the last 10%,
  continuing phase 1's full state (step counter, optimizer moments, learning-rate schedule).
* ``arch``: bert | roberta. ``roberta`` is the RoBERTa recipe (Liu et al., 2019) on the RoBERTa model
  (``bert_jax/models/roberta.py``): byte-level BPE (``tokenizer.kind="bpe"``, 50,265 tokens as
  GPT-2/RoBERTa, ``<s> ... </s>`` rows), one token type, positions past ``<pad>`` (id 1, so 514
  position rows for 512 tokens), dynamic masking, no NSP (``task.nsp_weight=0``), rows packed with
  whole-sentence ``<s> ... </s>`` pieces of several documents, Adam beta2 0.98 / eps 1e-6.
* ``ablation``: none | roberta (no NSP, packed whole sentences) | wwm (whole-word masking) |
  lamb (LAMB instead of AdamW, the large-batch recipe) | mask20 (masking rate 0.20) | static
  (static masks, dupe factor 10). ``configs/sweeps/ablations.py`` runs them side by side.

The data section points at the full English Wikipedia in TFDS plus a local book corpus; see
``docs/data.md`` for preparing them. The tokenizer is BERT's uncased ``vocab.txt``.
"""

from __future__ import annotations

import ml_collections

from bert_jax.optim import default_optimizer_config
from bert_jax.sharding import default_sharding_config
from configs.common import model_section, parse_variant, tokenizer_section, train_section
from data_pipelines.loader import default_data_config

TOTAL_STEPS = 1_000_000  # The paper's 1M steps (~40 epochs over 3.3B words at batch 256 x 512).
PHASE1_FRACTION = 0.9  # Share of the steps at sequence length 128.
ABLATIONS = ("none", "roberta", "wwm", "lamb", "mask20", "static")
ARCHITECTURES = ("bert", "roberta")
ROBERTA_VOCAB_SIZE = 50265  # GPT-2's byte-level BPE plus RoBERTa's specials (roberta-base).
ROBERTA_PAD_ID = 1  # <pad>: a BPE vocabulary trained here puts <s>, <pad>, </s>, <unk>, <mask> at 0..4.


def apply_roberta(c: ml_collections.ConfigDict) -> None:
    """Turns a BERT pretraining config into the RoBERTa recipe (the ``arch=roberta`` variant)."""
    c.model.architecture = "roberta"
    c.model.type_vocab_size = 1
    c.model.pad_token_id = ROBERTA_PAD_ID
    c.model.max_position_embeddings = 512 + ROBERTA_PAD_ID + 1  # 514: positions start after <pad>
    c.model.layer_norm_eps = 1e-5
    c.model.vocab_size = c.tokenizer.vocab_size = ROBERTA_VOCAB_SIZE
    c.tokenizer.kind = "bpe"
    c.tokenizer.vocab_file = "vocab/roberta/tokenizer.json"  # roberta-base's, or one build_vocab wrote (kind=bpe)
    c.tokenizer.lowercase = False
    c.data.nsp, c.data.packing, c.data.whole_sentences, c.data.masking = False, True, True, "dynamic"
    c.task.nsp_weight = 0.0
    c.optimizer.b2, c.optimizer.eps = 0.98, 1e-6


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pretraining config for ``arg`` = ``"size=...,phase=...,ablation=...,arch=..."``."""
    variant = parse_variant(arg, {"size": "base", "phase": "1", "ablation": "none", "arch": "bert"})
    size, phase, ablation = variant["size"], int(variant["phase"]), variant["ablation"]
    if variant["arch"] not in ARCHITECTURES:
        raise ValueError(f"config variant arch={variant['arch']!r}: expected one of {ARCHITECTURES}")
    if phase not in (1, 2):
        raise ValueError(f"config variant phase={phase}: expected 1 or 2")
    if ablation not in ABLATIONS:
        raise ValueError(f"config variant ablation={ablation!r}: expected one of {ABLATIONS}")

    c = ml_collections.ConfigDict()
    c.variant = variant  # The variant this config was built from (informational).
    c.task = ml_collections.ConfigDict({"name": "pretraining", "nsp_weight": 1.0})  # Objective; 0 = no NSP.
    c.model = model_section(size)  # ModelConfig fields (bert_jax/config.py).
    c.tokenizer = tokenizer_section()
    c.data = default_data_config()  # data_pipelines/loader.py: sources, lengths, masking, NSP/packing.
    c.data.sources = [  # English Wikipedia (TFDS) 3 : books 1, both with a 1% held-out split.
        {"name": "tfds", "dataset": "wikipedia/20230601.en", "data_dir": "", "weight": 3.0, "eval_fraction": 0.01},
        {"name": "books", "books_dir": "data/books", "data_dir": "data", "weight": 1.0, "eval_fraction": 0.01},
    ]
    c.optimizer = default_optimizer_config()  # bert_jax/optim.py: AdamW, warmup 10k, linear decay to 0.
    c.optimizer.total_steps = TOTAL_STEPS
    c.sharding = default_sharding_config()  # bert_jax/sharding.py: mesh axes and logical-axis rules.
    c.train = train_section()

    phase1_steps = int(TOTAL_STEPS * PHASE1_FRACTION)
    if phase == 1:
        c.data.max_seq_length, c.data.max_predictions_per_seq = 128, 20
        c.train.num_steps = phase1_steps
    else:
        c.data.max_seq_length, c.data.max_predictions_per_seq = 512, 80
        c.train.num_steps = TOTAL_STEPS  # Continues phase 1's step counter to the end of the schedule.
        c.train.init_mode = "full"
    c.model.dtype = "bfloat16"  # bf16 compute, fp32 parameters and optimizer state.
    c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 1000, 10_000, 10_000

    if ablation == "roberta":
        c.data.nsp, c.data.packing, c.data.whole_sentences = False, True, True
        c.task.nsp_weight = 0.0
    elif ablation == "wwm":
        c.data.whole_word_masking = True
    elif ablation == "lamb":
        c.optimizer.name, c.optimizer.learning_rate = "lamb", 1.76e-3  # You et al. (2019), batch 32k style.
    elif ablation == "mask20":
        c.data.masked_lm_prob = 0.20
    elif ablation == "static":
        c.data.masking, c.data.dupe_factor = "static", 10
    if variant["arch"] == "roberta":
        if ablation in ("static",):
            raise ValueError("config variant arch=roberta,ablation=static: RoBERTa's recipe is dynamic masking")
        apply_roberta(c)
    return c
