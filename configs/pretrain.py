"""BERT pretraining with the recipe of Devlin et al. (2018), in named variants.

Launch (any field can be overridden with ``--config.<field>=<value>``):

    python -m launch.pretrain --config=configs/pretrain.py:size=base,phase=1 --workdir=gs://BUCKET/bert-base
    python -m launch.pretrain --config=configs/pretrain.py:size=base,phase=2 --workdir=gs://BUCKET/bert-base-p2 \
        --config.train.init_from=gs://BUCKET/bert-base

Variants after the colon, comma-separated ``key=value``:

* ``size``: tiny | mini | small | medium | base | large (``bert_jax.config.MODEL_SIZES``).
* ``phase``: 1 = sequence length 128 for the first 90% of the steps; 2 = length 512 for the last 10%,
  continuing phase 1's full state (step counter, optimizer moments, learning-rate schedule).
* ``ablation``: none | roberta (no NSP, packed whole sentences) | wwm (whole-word masking) |
  lamb (LAMB instead of AdamW, the large-batch recipe) | mask20 (masking rate 0.20) | static
  (static masks, dupe factor 10). ``configs/sweeps/ablations.py`` runs them side by side.
* ``arch``: bert (default) | deberta_v2 (``ARCH_MODELS``: DeBERTa-v3's encoder, relative attention with
  256 position buckets, no absolute input positions, no token types, LayerNorm eps 1e-7, a 128,100-id
  SentencePiece vocabulary as Microsoft's DeBERTa-v3; MLM only (no NSP, packed whole sentences); the
  Enhanced Mask Decoder on: ``--config.model.enhanced_mask_decoder=True``).
* ``objective``: mlm (BERT's MLM [+ NSP]) | rtd (replaced-token detection, ``task.name='rtd'``: a
  half-depth generator trained with MLM, a discriminator trained to spot its replacements with weight
  ``task.rtd_weight=50``; packed rows, no NSP; ``bert_jax/tasks/replaced_token_detection.py``).
* ``sharing`` (with objective=rtd): ees (ELECTRA's embedding sharing) | gdes (DeBERTa-v3's
  gradient-disentangled sharing; ``arch=deberta_v2,objective=rtd,sharing=gdes`` is the DeBERTa-v3
  recipe) | none.

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
# Architecture variant -> ModelConfig overrides (DeBERTa-v3: He et al. 2021 and microsoft/deberta-v3-base's
# config.json: 12 layers x 768 at size=base, position_buckets 256, max_relative_positions -1 (= 512),
# "p2c|c2p", shared keys, LayerNorm'd relative embeddings, type_vocab_size 0, vocab 128,100).
ARCH_MODELS = {
    "bert": {},
    "deberta_v2": dict(architecture="deberta_v2", vocab_size=128100, type_vocab_size=0, layer_norm_eps=1e-7,
                       position_buckets=256, max_relative_positions=-1, pos_att_type="c2p|p2c", share_att_key=True,
                       norm_rel_ebd="layer_norm", position_biased_input=False),
}
OBJECTIVES = ("mlm", "rtd")
SHARINGS = ("ees", "gdes", "none")
RTD_WEIGHT = 50.0  # ELECTRA's lambda, the discriminator loss weight (Clark et al., 2020).


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pretraining config for ``arg`` = ``"size=...,phase=...,ablation=..."``."""
    variant = parse_variant(arg, {"size": "base", "phase": "1", "ablation": "none", "arch": "bert",
                                  "objective": "mlm", "sharing": "ees"})
    size, phase, ablation = variant["size"], int(variant["phase"]), variant["ablation"]
    if variant["arch"] not in ARCH_MODELS:
        raise ValueError(f"config variant arch={variant['arch']!r}: expected one of {tuple(ARCH_MODELS)}")
    objective, sharing = variant["objective"], variant["sharing"]
    if objective not in OBJECTIVES:
        raise ValueError(f"config variant objective={objective!r}: expected one of {OBJECTIVES}")
    if sharing not in SHARINGS:
        raise ValueError(f"config variant sharing={sharing!r}: expected one of {SHARINGS}")
    if phase not in (1, 2):
        raise ValueError(f"config variant phase={phase}: expected 1 or 2")
    if ablation not in ABLATIONS:
        raise ValueError(f"config variant ablation={ablation!r}: expected one of {ABLATIONS}")

    c = ml_collections.ConfigDict()
    c.variant = variant  # The variant this config was built from (informational).
    c.task = ml_collections.ConfigDict({"name": "pretraining", "nsp_weight": 1.0})  # Objective; 0 = no NSP.
    c.model = model_section(size, **ARCH_MODELS[variant["arch"]])  # ModelConfig fields (bert_jax/config.py).
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
    if variant["arch"] == "deberta_v2":  # MLM only, as DeBERTa; SentencePiece with DeBERTa-v3's vocabulary size
        c.data.nsp, c.data.packing, c.data.whole_sentences = False, True, True
        c.task.nsp_weight = 0.0
        c.tokenizer.kind, c.tokenizer.model_file, c.tokenizer.lowercase = "sentencepiece", "vocab/spm/spm.model", False
        c.tokenizer.vocab_size = c.model.vocab_size
    if objective == "rtd":
        c.task = ml_collections.ConfigDict({
            "name": "rtd",
            "nsp_weight": 0.0,  # No next-sentence head.
            "rtd_weight": RTD_WEIGHT,  # lambda: loss = generator MLM + rtd_weight x discriminator RTD.
            "embedding_sharing": sharing,  # ees | gdes (DeBERTa-v3) | none.
            "generator_layers": 0,  # 0: half the discriminator's layers (DeBERTa-v3's generator).
            "generator_hidden_size": 0,  # 0: the discriminator's width (needed to share embeddings).
        })
        c.data.nsp, c.data.packing, c.data.whole_sentences = False, True, True  # ELECTRA: packed, no NSP.
    return c
