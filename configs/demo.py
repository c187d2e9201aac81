"""The embedded demo: a tiny BERT pretrained on the real Wikipedia excerpt that gensim ships.

Runs end to end on 2 CPU cores in a few minutes: builds the sample corpus through the Wikipedia dump
builder (a user's full dump goes through the same code), trains a WordPiece vocabulary on it, pretrains
MLM + NSP, evaluates on the held-out articles and plots the curves.

    python -m launch.pretrain --config=configs/demo.py --workdir=workdirs/demo
    python -m launch.pretrain --config=configs/demo.py:arch=deberta_v2 --workdir=workdirs/demo-deberta
    python -m launch.pretrain --config=configs/demo.py:arch=longformer --workdir=workdirs/demo-longformer

``arch=longformer``: the same run as a tiny Longformer (256-token rows, window 32, MLM only).

``configs/demo.py:arch=roberta`` is the same run with the RoBERTa recipe (``configs/pretrain.py``'s
``arch=roberta``): a byte-level BPE vocabulary trained on the corpus, ``<s> ... </s>`` rows packed with
whole sentences, dynamic masking, MLM only.

``configs/demo.py:arch=modernbert`` runs the same corpus through a tiny ModernBERT (2 layers: one
global, one with a 32-token sliding window; RoPE, GeGLU, MLM only on packed rows with 30% masking).
    python -m launch.pretrain --config=configs/demo.py:objective=rtd --workdir=workdirs/demo-rtd

Variants (``configs/pretrain.py``): ``objective=mlm|rtd`` and, with rtd, ``sharing=ees|gdes|none``.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain
from configs.common import parse_variant
from data_pipelines.sources import demo_dump_path

DATA_DIR = "data/demo"  # Where the built corpus and its vocabulary go (relative to the working directory).


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The demo; ``arg`` ``"arch=deberta_v2"`` trains the DeBERTa-v3 encoder instead (same data, WordPiece);
    ``objective=rtd`` (with ``sharing=ees|gdes|none``) trains it by replaced-token detection."""
    variant = parse_variant(arg, {"arch": "bert", "objective": "mlm", "sharing": "ees"})
    arch = variant["arch"]
    c = pretrain.get_config(f"size=tiny,phase=1,arch={arch},objective={variant['objective']},"
                            f"sharing={variant['sharing']}")
    if c.tokenizer.kind == "sentencepiece":  # DeBERTa's recipe names a SentencePiece model: train WordPiece here
        c.tokenizer = pretrain.tokenizer_section()
    c.model.dtype = "float32"  # CPU: bf16 brings no speed there.
    # The demo never goes past 128 tokens (RoBERTa's positions start after <pad>: 2 more rows).
    c.model.max_position_embeddings = 128 + (c.model.pad_token_id + 1 if arch == "roberta" else 0)
    c.tokenizer.vocab_file = f"{DATA_DIR}/bpe/tokenizer.json" if arch == "roberta" else f"{DATA_DIR}/vocab/vocab.txt"
    c.tokenizer.vocab_size = 8000  # A small vocabulary trained on the demo corpus.
    c.tokenizer.build_if_missing = True
    c.model.vocab_size = c.tokenizer.vocab_size
    c.data.sources = [{
        "name": "wikipedia_dump",
        "dump_path": demo_dump_path(),  # gensim's 206-page excerpt of a real enwiki dump.
        "data_dir": DATA_DIR,
        "prepare": True,  # Build the TFDS dataset on first use.
        "eval_fraction": 0.1,  # About 10 of the articles are held out for evaluation.
        "weight": 1.0,
    }]
    c.data.max_seq_length, c.data.max_predictions_per_seq = 128, 20
    c.optimizer.learning_rate = 2e-3  # Small model, short run: a larger peak than BERT-base's 1e-4 (5e-3 diverges).
    c.optimizer.warmup_steps = 100
    c.optimizer.total_steps = 1500
    c.train.batch_size = 16
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_batches = 16
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2
    if arch == "longformer":
        pretrain.set_longformer(c, tokens=256, window=32)
    if arch == "modernbert":
        c.data.max_predictions_per_seq = 38  # 30% of 128.
        c.model.local_attention = 32  # 16 keys each side: the local layer's window is shorter than the row.
        c.model.global_attn_every_n_layers = 2
    return c
