"""BERT pretraining with the recipe of Devlin et al. (2018), in named variants.

Launch (any field can be overridden with ``--config.<field>=<value>``):

    python -m launch.pretrain --config=configs/pretrain.py:size=base,phase=1 --workdir=gs://BUCKET/bert-base
    python -m launch.pretrain --config=configs/pretrain.py:size=base,phase=2 --workdir=gs://BUCKET/bert-base-p2 \
        --config.train.init_from=gs://BUCKET/bert-base

Variants after the colon, comma-separated ``key=value``:

* ``size``: tiny | mini | small | medium | base | large (``bert_jax.config.MODEL_SIZES``).
* ``phase``: 1 = sequence length 128 for the first 90% of the steps; 2 = length 512 for the last 10%,
  continuing phase 1's full state (step counter, optimizer moments, learning-rate schedule).
* ``arch``: the encoder architecture (``ARCH_RECIPES``; docs/models.md):

  - ``bert`` (default): the paper's model and objective (MLM + NSP).
  - ``roberta``: the RoBERTa recipe (Liu et al., 2019) on the RoBERTa model (``bert_jax/models/roberta.py``):
    byte-level BPE (``tokenizer.kind="bpe"``, 50,265 tokens as GPT-2/RoBERTa, ``<s> ... </s>`` rows), one
    token type, positions past ``<pad>`` (id 1, so 514 position rows for 512 tokens), dynamic masking, no
    NSP (``task.nsp_weight=0``), rows packed with whole-sentence ``<s> ... </s>`` pieces of several
    documents, Adam beta2 0.98 / eps 1e-6.
  - ``deberta_v2``: DeBERTa-v3's encoder (``ARCH_MODELS``): relative attention with 256 position
    buckets, no absolute input positions, no token types, LayerNorm eps 1e-7, a 128,100-id
    SentencePiece vocabulary as Microsoft's DeBERTa-v3 (read with DeBERTa's conventions,
    ``tokenizer.convention="deberta"``, the ids of transformers' ``DebertaV2Tokenizer``); MLM only (no
    NSP, packed whole sentences); the Enhanced Mask Decoder on: ``--config.model.enhanced_mask_decoder=True``.
  - ``longformer``: sliding-window attention, window 512 in every layer, global attention on ``[CLS]``,
    4,096-token rows, MLM only; start it from a BERT/RoBERTa checkpoint converted by
    ``bert-jax to-longformer`` with ``--config.train.init_from``, as the Longformer paper does; ``phase``
    then sets nothing but the step count.
  - ``modernbert``: the ModernBERT recipe (Warner et al.,
    2024; ``MODERNBERT_SIZES``: base 22 x 768, large 28 x 1024 as transformers' ModernBertConfig): no
    NSP, packed sequences, 30% masking, ``phase=1`` at 1,024 tokens, ``phase=long`` the context extension
    at 8,192 (continuing phase 1 like ``phase=2``). ``size`` is then base | large | tiny (tests).
* ``ablation``: none | roberta (no NSP, packed whole sentences) | wwm (whole-word masking) |
  lamb (LAMB instead of AdamW, the large-batch recipe) | mask20 (masking rate 0.20) | static
  (static masks, dupe factor 10). ``configs/sweeps/ablations.py`` runs them side by side.
* ``recipe``: paper (default; attention dropout 0.1 as in the paper, so training runs the einsum
  ``"reference"`` attention) | modern (attention dropout 0, as ModernBERT-style recipes train: training
  runs the fused kernel, ``jax.nn.dot_product_attention``, cuDNN flash attention on GPUs).
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
LONGFORMER_TOKENS, LONGFORMER_WINDOW = 4096, 512  # Beltagy et al. (2020): 4,096 tokens, window 512.
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



# ModernBERT sizes (transformers' ModernBertConfig and the released checkpoints): layers, hidden, heads, GLU
# width. ``tiny`` is ours, for tests and the CPU demo.
MODERNBERT_SIZES = {"tiny": (2, 128, 2, 192), "base": (22, 768, 12, 1152), "large": (28, 1024, 16, 2624)}
MODERNBERT_PHASES = {"1": (1024, 308), "long": (8192, 2458)}  # sequence length, predictions (30%)
OBJECTIVES = ("mlm", "rtd")
SHARINGS = ("ees", "gdes", "none")
RTD_WEIGHT = 50.0  # ELECTRA's lambda, the discriminator loss weight (Clark et al., 2020).
RECIPES = ("paper", "modern")
VOCAB_PAD_MULTIPLE = 128  # 30,522 -> 30,592 rows: lane-aligned MLM matmul, and tensor=2/4/8 split the vocabulary.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pretraining config for ``arg`` = ``"size=...,phase=...,ablation=...,recipe=...,arch=..."``."""
    variant = parse_variant(arg, {"size": "base", "phase": "1", "ablation": "none", "recipe": "paper", "arch": "bert",
                                  "objective": "mlm", "sharing": "ees"})
    if variant["arch"] == "modernbert":  # its own sizes and phases (MODERNBERT_SIZES, _PHASES)
        return _modernbert_config(variant)
    size, phase, ablation = variant["size"], int(variant["phase"]), variant["ablation"]
    recipe, arch = variant["recipe"], variant["arch"]
    if arch not in ARCH_RECIPES:
        raise ValueError(f"config variant arch={arch!r}: expected one of {tuple(ARCH_RECIPES)}")
    objective, sharing = variant["objective"], variant["sharing"]
    if objective not in OBJECTIVES:
        raise ValueError(f"config variant objective={objective!r}: expected one of {OBJECTIVES}")
    if sharing not in SHARINGS:
        raise ValueError(f"config variant sharing={sharing!r}: expected one of {SHARINGS}")
    if phase not in (1, 2):
        raise ValueError(f"config variant phase={phase}: expected 1 or 2")
    if ablation not in ABLATIONS:
        raise ValueError(f"config variant ablation={ablation!r}: expected one of {ABLATIONS}")
    if recipe not in RECIPES:
        raise ValueError(f"config variant recipe={recipe!r}: expected one of {RECIPES}")

    c = ml_collections.ConfigDict()
    c.variant = variant  # The variant this config was built from (informational).
    c.task = ml_collections.ConfigDict({"name": "pretraining", "nsp_weight": 1.0})  # Objective; 0 = no NSP.
    c.model = model_section(size, **ARCH_MODELS.get(arch, {}))  # ModelConfig fields (bert_jax/config.py).
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
    c.model.vocab_pad_multiple = VOCAB_PAD_MULTIPLE  # Padding ids' logits masked: the same loss as unpadded.
    if recipe == "modern":
        c.model.attention_dropout = 0.0  # No dropout on the probabilities: the fused attention kernel trains.
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
    ARCH_RECIPES[arch](c)
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


def _bert(c: ml_collections.ConfigDict) -> None:
    """BERT: the sections above are its recipe."""


def _roberta(c: ml_collections.ConfigDict) -> None:
    if c.data.masking == "static":
        raise ValueError("config variant arch=roberta,ablation=static: RoBERTa's recipe is dynamic masking")
    apply_roberta(c)


def _deberta_v2(c: ml_collections.ConfigDict) -> None:
    """DeBERTa-v3: MLM only, packed whole sentences, SentencePiece with DeBERTa-v3's vocabulary size."""
    c.data.nsp, c.data.packing, c.data.whole_sentences = False, True, True
    c.task.nsp_weight = 0.0
    # DeBERTa-v3's spm.model read with its conventions (data_pipelines/deberta_spm.py): [PAD] 0, [CLS] 1,
    # [SEP] 2, [UNK] 3, [MASK] after the pieces; the ids of transformers' DebertaV2Tokenizer. Cased.
    c.tokenizer.kind, c.tokenizer.model_file, c.tokenizer.lowercase = "sentencepiece", "vocab/spm/spm.model", False
    c.tokenizer.convention = "deberta"
    c.tokenizer.vocab_file = ""  # not a SentencePiece field
    c.tokenizer.vocab_size = c.model.vocab_size


def _longformer(c: ml_collections.ConfigDict) -> None:
    set_longformer(c, LONGFORMER_TOKENS, LONGFORMER_WINDOW)


def set_longformer(c: ml_collections.ConfigDict, tokens: int, window: int) -> None:
    """Turns config ``c`` into Longformer pretraining: ``tokens``-long rows, one ``window`` for every layer,
    positions for ``tokens`` past the padding id, MLM only (15% of the tokens predicted)."""
    c.model.architecture = "longformer"
    c.model.attention_window = [window]
    c.model.max_position_embeddings = tokens + c.model.pad_token_id + 1
    c.data.max_seq_length, c.data.max_predictions_per_seq = tokens, round(0.15 * tokens)
    c.data.nsp = False
    c.task.nsp_weight = 0.0


# Architecture variant -> the function that turns the BERT sections into its recipe (after the ablation).
ARCH_RECIPES = {"bert": _bert, "roberta": _roberta, "deberta_v2": _deberta_v2, "longformer": _longformer}


def _modernbert_config(variant: dict[str, str]) -> ml_collections.ConfigDict:
    """The ModernBERT recipe: MLM only on packed rows, 30% masking, 1,024 tokens then 8,192 (``phase=long``)."""
    size, phase = variant["size"], variant["phase"]
    if size not in MODERNBERT_SIZES:
        raise ValueError(f"config variant size={size!r} with arch=modernbert: expected one of {sorted(MODERNBERT_SIZES)}")
    if phase not in MODERNBERT_PHASES:
        raise ValueError(f"config variant phase={phase} with arch=modernbert: expected one of {list(MODERNBERT_PHASES)}")
    if variant["ablation"] != "none":
        raise ValueError(f"config variant ablation={variant['ablation']!r}: the ablations are BERT's (arch=bert)")
    c = get_config("size=base,phase=1")
    c.variant = variant
    layers, hidden, heads, glu = MODERNBERT_SIZES[size]
    # ModernBERT's own choices; the vocabulary stays the tokenizer's (ModernBERT's 50,368 is its BPE's).
    c.model = model_section("base", architecture="modernbert", num_layers=layers, hidden_size=hidden,
                            num_heads=heads, intermediate_size=glu, hidden_dropout=0.0, attention_dropout=0.0,
                            layer_norm_eps=1e-5, max_position_embeddings=8192, vocab_size=c.tokenizer.vocab_size)
    c.model.dtype = "bfloat16"
    c.task.nsp_weight = 0.0  # No NSP head.
    c.data.nsp, c.data.packing = False, True
    c.data.masked_lm_prob = 0.30
    c.data.max_seq_length, c.data.max_predictions_per_seq = MODERNBERT_PHASES[phase]
    if phase == "long":
        c.train.init_mode = "full"  # Continues phase 1's state, as BERT's phase 2.
        c.train.num_steps = TOTAL_STEPS
    return c
