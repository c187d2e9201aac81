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

The data section points at the full English Wikipedia in TFDS plus a local book corpus; see
``docs/data.md`` for preparing them. The tokenizer is BERT's uncased ``vocab.txt``.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from bert_jax.config import ModelConfig
from bert_jax.optim import default_optimizer_config
from bert_jax.sharding import default_sharding_config
from data_pipelines.loader import default_data_config

TOTAL_STEPS = 1_000_000  # The paper's 1M steps (~40 epochs over 3.3B words at batch 256 x 512).
PHASE1_FRACTION = 0.9  # Share of the steps at sequence length 128.
ABLATIONS = ("none", "roberta", "wwm", "lamb", "mask20", "static")


def parse_variant(arg: str | None, defaults: dict[str, str]) -> dict[str, str]:
    """Parses ``"size=base,phase=2"`` into a dict over ``defaults``' keys (unknown keys are errors)."""
    variant = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"config variant {item!r}: expected key=value with key in {sorted(defaults)}")
        variant[key] = value
    return variant


def model_section(size: str, **overrides) -> ml_collections.ConfigDict:
    """All ``ModelConfig`` fields of a named size, so each can be overridden from the command line."""
    return ml_collections.ConfigDict(ModelConfig.from_size(size, **overrides).to_dict())


def train_section() -> ml_collections.ConfigDict:
    """The run loop's settings."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # Seed of parameter init, dropout and the data order.
    c.batch_size = 256  # Global batch size (sequences per optimizer step), over all processes.
    c.num_steps = 1000  # Optimizer steps of this run (the loop stops at this step).
    c.grad_accum_steps = 1  # Micro-batches per step (accumulate_step); batch_size must divide by it.
    c.log_every = 100  # Steps between training-metric records.
    c.eval_every = 1000  # Steps between held-out evaluations (0: only at the end).
    c.eval_batches = 50  # Batches per evaluation (the same batches every time).
    c.checkpoint_every = 1000  # Steps between checkpoints (and always at the end and on SIGTERM).
    c.keep_checkpoints = 3  # Checkpoints kept in <workdir>/checkpoints.
    c.async_checkpoint = True  # Write checkpoints in the background.
    c.init_from = ""  # Restore order step 2-4: a workdir, checkpoint dir or Hugging Face dir to start from.
    c.init_mode = "auto"  # "full" state, "params" only, or "auto" (full if it matches, else params).
    c.on_nonfinite = "stop"  # NaN/Inf loss: "stop" (names the step and the checkpoint) or "skip" the update.
    c.worker_count = 0  # Grain worker processes per host for the training data (0: in-process).
    c.host_heap = "auto"  # "resident": glibc keeps freed memory mapped (no per-step page faults); "auto": on CPU.
    c.progress_bar = True  # Show a tqdm progress bar with loss, tokens/s, MFU and ETA.
    c.tensorboard = True  # Write TensorBoard event files (tensorboardX) into <workdir>/tensorboard.
    c.plot = True  # Write <workdir>/curves.png at the end.
    return c


def tokenizer_section() -> ml_collections.ConfigDict:
    """The tokenizer spec (``data_pipelines.tokenizer.load_tokenizer``) plus how to build it if missing."""
    c = ml_collections.ConfigDict()
    c.kind = "wordpiece"  # "wordpiece" (vocab.txt) or "sentencepiece" (.model file).
    c.vocab_file = "vocab/uncased/vocab.txt"  # BERT's uncased vocab.txt (or one build_vocab wrote).
    c.model_file = ""  # SentencePiece model file, when kind is "sentencepiece".
    c.lowercase = True  # Lower-case (uncased BERT); also strips accents unless strip_accents=False.
    # Remove accents after NFD: None = when lowercasing. True also breaks Hangul syllables into jamo;
    # keep Korean with lowercase=False or strip_accents=False (docs/data.md, "Korean, CJK, accents").
    c.strip_accents = placeholder(bool)
    c.tokenize_chinese_chars = placeholder(bool)  # Spaces around CJK ideographs: None = True (BERT).
    c.limit_alphabet = placeholder(int)  # WordPiece training: most characters kept; None = 8000 (CJK).
    c.vocab_size = 30522  # Size of a vocabulary trained when build_if_missing (and the model's vocab size).
    c.build_if_missing = False  # Train a vocabulary on the first training source when the file is missing.
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pretraining config for ``arg`` = ``"size=...,phase=...,ablation=..."``."""
    variant = parse_variant(arg, {"size": "base", "phase": "1", "ablation": "none"})
    size, phase, ablation = variant["size"], int(variant["phase"]), variant["ablation"]
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
    return c
