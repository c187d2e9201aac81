"""Inference with a pretrained encoder: fill-mask, sentence embeddings and nearest-neighbour search.

* :func:`load_model` reads a Hugging Face / exported directory or one of our checkpoints (a pretraining
  or fine-tuning workdir, or a ``checkpoints/<step>`` dir) with its tokenizer.
* :func:`fill_mask`: the ``top_k`` most probable tokens for every ``[MASK]`` of a text, from the MLM
  head (a model without one, e.g. the sentence-embedding MiniLM, is refused with a clear error).
* :func:`embed`: Sentence-BERT mean pooling, the average of the last hidden states over the real tokens
  (``[CLS]`` and ``[SEP]`` included), optionally L2-normalised.
* :class:`NearestNeighbours`: exact cosine-similarity search with ``faiss`` (``IndexFlatIP`` over
  L2-normalised vectors).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import faiss
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import checkpoint as checkpoint_lib
from bert_jax.interop import hf_bert, hf_files, init_source
from bert_jax.config import ModelConfig
from bert_jax.model import BertForPreTraining, BertModel
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.finetune import local_text

LENGTH_BUCKET = 16  # Batches are padded to a multiple of this many tokens (few distinct compiled shapes).


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """An encoder ready for inference.

    Attributes:
      model_config: its hyperparameters.
      params: the unboxed ``BertForPreTraining``-style tree: ``bert`` plus, when present, ``mlm_head``.
      tokenizer: its tokenizer.
      has_mlm_head: whether fill-mask can run.
      source: where it came from.
    """

    model_config: ModelConfig
    params: dict[str, Any]
    tokenizer: tokenizer_lib.Tokenizer
    has_mlm_head: bool
    source: str


def load_model(init_from: str, *, tokenizer_spec: dict[str, Any] | None = None) -> LoadedModel:
    """Loads an encoder (and its MLM head when it has one) for inference.

    Args:
      init_from: a Hugging Face / exported directory, or a workdir / checkpoint dir of ours.
      tokenizer_spec: a ``load_tokenizer`` spec; default: the tokenizer ``init_from`` carries.

    Raises:
      FileNotFoundError / ValueError: naming what is missing (weights, model config, tokenizer).
    """
    source = init_source.resolve_init_source(init_from)
    if source.kind == "scratch":
        raise ValueError("init_from is empty: name a Hugging Face directory or a checkpoint")
    if source.kind == "hf":
        cfg, params, report = hf_files.load_hf_checkpoint(source.path, scan_layers=False)
        has_mlm_head = "mlm_head" not in report.missing_heads
    else:
        if source.model_fields is None:
            raise ValueError(f"{init_from}: no run config.json beside the checkpoints, so the model size is unknown")
        cfg = ModelConfig(**source.model_fields)
        template = hf_bert.init_pretraining_params(cfg, jax.random.key(0))
        directory, step = checkpoint_lib.find_checkpoint_dir(source.path)
        params, fresh = checkpoint_lib.restore_params_only(directory, step, template)
        if "bert" in fresh:
            raise ValueError(f"{source.path} holds no encoder parameters ('bert')")
        has_mlm_head = "mlm_head" not in fresh
    spec = tokenizer_spec or source.tokenizer_spec
    if spec is None:
        raise ValueError(f"{init_from} carries no tokenizer (no vocab.txt, no run config); pass a tokenizer spec")
    keep = ("bert", "mlm_head") if has_mlm_head else ("bert",)
    return LoadedModel(cfg, {name: params[name] for name in keep}, tokenizer_lib.load_tokenizer(spec),
                       has_mlm_head, init_from)


def encode_texts(tokenizer: tokenizer_lib.Tokenizer, texts: Sequence[str],
                 max_seq_length: int) -> dict[str, np.ndarray]:
    """``[CLS] text [SEP]`` rows padded to a multiple of ``LENGTH_BUCKET``; too long texts are cut (logged).

    Returns:
      The encoder fields (``input_ids``, ``segment_ids``, ``input_mask``, ``sequence_ids``,
      ``position_ids``), int32 ``[N, S]``.
    """
    pieces = tokenizer.encode_batch(list(texts))
    cut = sum(len(p) > max_seq_length - 2 for p in pieces)
    if cut:
        logging.warning("%d of %d texts are longer than %d tokens and were cut", cut, len(texts), max_seq_length)
    rows = [[tokenizer.cls_id, *np.asarray(p[:max_seq_length - 2]).tolist(), tokenizer.sep_id] for p in pieces]
    length = min(max_seq_length, -(-max(map(len, rows)) // LENGTH_BUCKET) * LENGTH_BUCKET)
    input_ids = np.full((len(rows), length), tokenizer.pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)], mask[i, :len(row)] = row, 1
    positions = np.broadcast_to(np.arange(length, dtype=np.int32), input_ids.shape).copy()
    return {"input_ids": input_ids, "segment_ids": np.zeros_like(input_ids), "input_mask": mask,
            "sequence_ids": mask.copy(), "position_ids": positions}


@functools.partial(jax.jit, static_argnums=0)
def _mlm_probabilities(cfg: ModelConfig, params, batch) -> jax.Array:
    logits = BertForPreTraining(cfg).apply({"params": params}, batch, method=BertForPreTraining.all_position_logits)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def fill_mask(model: LoadedModel, texts: Sequence[str], top_k: int = 5) -> list[list[list[dict[str, Any]]]]:
    """The most probable tokens for each ``[MASK]`` of each text.

    Args:
      model: a model with an MLM head.
      texts: texts with one or more ``[MASK]`` tokens (the literal ``[MASK]``).
      top_k: candidates per mask.

    Returns:
      Per text, per ``[MASK]`` (left to right), ``top_k`` dicts ``{token, token_id, score}`` (score =
      softmax probability), most probable first.

    Raises:
      ValueError: when the model has no MLM head or a text has no ``[MASK]``.
    """
    if not model.has_mlm_head:
        raise ValueError(f"{model.source} has no masked-LM head (e.g. a sentence-embedding encoder); fill-mask "
                         "needs a pretraining checkpoint or a Hugging Face BertForPreTraining/BertForMaskedLM")
    tokenizer = model.tokenizer
    batch = encode_texts(tokenizer, texts, model.model_config.max_position_embeddings)
    masked = batch["input_ids"] == tokenizer.mask_id
    empty = [text for text, row in zip(texts, masked) if not row.any()]
    if empty:
        raise ValueError(f"no [MASK] token in {empty[0]!r}")
    probabilities = np.asarray(_mlm_probabilities(model.model_config, model.params, batch))
    results = []
    for row, positions in enumerate(masked):
        per_mask = []
        for position in np.flatnonzero(positions):
            p = probabilities[row, position]
            best = np.argsort(-p, kind="stable")[:top_k]
            per_mask.append([{"token": tokenizer.id_to_token(int(i)), "token_id": int(i), "score": float(p[i])}
                             for i in best])
        results.append(per_mask)
    return results


@functools.partial(jax.jit, static_argnums=0)
def _mean_pooled(cfg: ModelConfig, params, batch) -> jax.Array:
    hidden, _ = BertModel(cfg).apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                                     batch["sequence_ids"], batch["position_ids"])
    mask = batch["input_mask"][..., None].astype(jnp.float32)
    return jnp.sum(hidden.astype(jnp.float32) * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)


def embed(model: LoadedModel, texts: Sequence[str], *, batch_size: int = 64, max_seq_length: int = 256,
          normalize: bool = False) -> np.ndarray:
    """Sentence embeddings: the mean of the last hidden states over each text's real tokens.

    Args:
      model: any encoder.
      texts: the sentences.
      batch_size: texts per forward pass.
      max_seq_length: longer texts are cut (with a warning).
      normalize: L2-normalise each vector (as Sentence-BERT's all-MiniLM-L6-v2 does).

    Returns:
      float32 ``[len(texts), hidden_size]``.
    """
    max_seq_length = min(max_seq_length, model.model_config.max_position_embeddings)
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = encode_texts(model.tokenizer, texts[start:start + batch_size], max_seq_length)
        chunks.append(np.asarray(_mean_pooled(model.model_config, model.params["bert"], batch)))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, model.model_config.hidden_size), np.float32)
    return l2_normalize(vectors) if normalize else vectors


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32 ``[N, D]``."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class NearestNeighbours:
    """Exact cosine-similarity search over a fixed set of vectors (``faiss.IndexFlatIP`` on unit vectors)."""

    def __init__(self, vectors: np.ndarray):
        """Args:
          vectors: float ``[N, D]`` corpus embeddings (normalised here).
        """
        vectors = l2_normalize(vectors)
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar corpus rows of each query.

        Args:
          queries: float ``[Q, D]``.
          k: neighbours per query (at most the corpus size).

        Returns:
          ``(similarities float32 [Q, k], indices int64 [Q, k])``, most similar first.
        """
        return self.index.search(l2_normalize(queries), min(k, len(self)))


def read_sentences(path: str, encoding: str = "utf-8") -> list[str]:
    """The texts of a ``.txt`` file (one a line; fastText ``__label__`` prefixes dropped), ``.tsv`` or ``.jsonl``."""
    records = local_text.read_labelled_texts(path, encoding=encoding, require_labels=False)
    return [record.text for record in records]
