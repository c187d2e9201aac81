"""Config sections every run shares: variants, model, tokenizer and train loop; the fine-tuning base.

``configs/pretrain.py`` (and ``configs/demo.py`` through it) and every ``configs/finetune_*.py`` build
their configs from these, so a field means the same in each. Where to start from is one field for
every run, ``train.init_from`` (beside ``train.init_mode``).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from bert_jax.config import ModelConfig
from bert_jax.optim import default_optimizer_config
from bert_jax.sharding import default_sharding_config

# Fine-tuning configs once read init_from at the top level; the field stays, empty, so that the old
# spelling is refused with the new one named (``check_moved_fields``) instead of being ignored.
MOVED_FIELDS = {"init_from": "train.init_from"}


def check_moved_fields(config: ml_collections.ConfigDict) -> None:
    """Refuses fields that moved, naming the new one.

    Raises:
      ValueError: one line, e.g. ``init_from='x': the field init_from moved to train.init_from; set
        --config.train.init_from=x instead``.
    """
    for old, new in MOVED_FIELDS.items():
        if config.get(old) is not None:
            raise ValueError(f"{old}={config.get(old)!r}: the field {old} moved to {new}; "
                             f"set --config.{new}={config.get(old)} instead")


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
    c.init_from = ""  # Where to start: a workdir, checkpoint dir or Hugging Face dir (restore order steps 2-4).
    c.init_mode = "auto"  # "full" state, "params" only, or "auto" (full if it matches, else params).
    c.on_nonfinite = "stop"  # NaN/Inf loss: "stop" (names the step and the checkpoint) or "skip" the update.
    c.worker_count = 0  # Grain worker processes per host for the training data (0: in-process).
    c.host_heap = "auto"  # "resident": glibc keeps freed memory mapped (no per-step page faults); "auto": on CPU.
    c.progress_bar = True  # Show a tqdm progress bar with loss, tokens/s, MFU and ETA.
    c.tensorboard = True  # Write TensorBoard event files (tensorboardX) into <workdir>/tensorboard.
    c.plot = True  # Write <workdir>/curves.png at the end.
    # Persistent XLA compilation cache: "auto" = <workdir>/compilation_cache (local workdirs; off for remote ones),
    # a directory (a gs:// one too), or "" = off. A resumed run and the next seed/fold load the compiled steps.
    c.compilation_cache_dir = "auto"
    c.compilation_cache_min_compile_secs = 1.0  # Compilations faster than this are not stored.
    c.compilation_cache_min_entry_bytes = 0  # Compiled programs smaller than this are not stored.
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
    c.strip_accents = config_dict.placeholder(bool)
    c.tokenize_chinese_chars = config_dict.placeholder(bool)  # Spaces around CJK ideographs: None = True (BERT).
    c.limit_alphabet = config_dict.placeholder(int)  # WordPiece training: most characters kept; None = 8000 (CJK).
    c.vocab_size = 30522  # Size of a vocabulary trained when build_if_missing (and the model's vocab size).
    c.build_if_missing = False  # Train a vocabulary on the first training source when the file is missing.
    return c


def finetune_config(task_name: str) -> ml_collections.ConfigDict:
    """The config every ``configs/finetune_*.py`` starts from, for a ``data_pipelines.finetune`` task name."""
    c = ml_collections.ConfigDict()
    # Moved to train.init_from: a value here stops the run, naming the field (a fresh placeholder per config).
    c.init_from = config_dict.placeholder(str)
    c.seeds = "0"  # Comma-separated seeds; each runs in <workdir>/seed_<s> when there are several.
    c.task = ml_collections.ConfigDict()
    c.task.name = task_name  # A data_pipelines.finetune reader; its kind picks the head and the metrics.
    c.task.reader_options = ml_collections.ConfigDict()  # Keyword options of get_finetune_reader.
    c.task.pooling = "cls"  # Sentence vector of the classification heads: BERT's "cls" pooler, or "mean".
    c.model = model_section("base")  # From scratch: used as is. With train.init_from: only dtype, dropout, layout.
    c.model.dtype = "float32"
    c.tokenizer = tokenizer_section()
    c.tokenizer.vocab_file = ""  # "" = train.init_from's tokenizer (its vocab.txt, or its run config's).
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
    # train.init_from: a pretraining workdir / checkpoint dir, a Hugging Face or exported dir; "" = scratch.
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


