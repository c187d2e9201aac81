"""Inference with a pretrained encoder: fill-mask, sentence embeddings and nearest-neighbour search.

* :func:`load_model` reads a Hugging Face / exported directory or one of our checkpoints (a pretraining
  or fine-tuning workdir, or a ``checkpoints/<step>`` dir) with its tokenizer.
* :func:`fill_mask`: the ``top_k`` most probable tokens for every ``[MASK]`` of a text, from the MLM
  head (a model without one, e.g. the sentence-embedding MiniLM, is refused with a clear error).
* :func:`embed`: sentence vectors, the last hidden states pooled over the real tokens by one of
  Sentence-BERT's poolings (``cls``, ``mean`` (the default), ``max``; :mod:`bert_jax.pooling`),
  optionally L2-normalised.
* :class:`NearestNeighbours`: ``faiss`` search by cosine similarity, inner product or L2 distance, over an
  exact (``flat``), graph (``hnsw``) or inverted-file (``ivf``) index, saved to and loaded from a file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import faiss
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import checkpoint as checkpoint_lib
from bert_jax.interop import hf_convert, hf_files, init_source
from bert_jax.config import ModelConfig
from bert_jax.heads import PreTrainingModel
from bert_jax import models
from bert_jax.pooling import POOLINGS, pool
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.rows import encoder_rows
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
        template = hf_convert.init_pretraining_params(cfg, jax.random.key(0))
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
    kept = [p[:max_seq_length - 2] for p in pieces]
    length = min(max_seq_length, -(-(max(map(len, kept)) + 2) // LENGTH_BUCKET) * LENGTH_BUCKET)
    return encoder_rows(kept, length=length, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                        pad_id=tokenizer.pad_id, positions=True)


@functools.partial(jax.jit, static_argnums=0)
def _mlm_probabilities(cfg: ModelConfig, params, batch) -> jax.Array:
    logits = PreTrainingModel(cfg).apply({"params": params}, batch, method=PreTrainingModel.all_position_logits)
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
                         "needs a pretraining checkpoint or a Hugging Face PreTrainingModel/BertForMaskedLM")
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


@functools.partial(jax.jit, static_argnums=(0, 1))
def _pooled(cfg: ModelConfig, pooling: str, params, batch) -> jax.Array:
    hidden, _ = models.encoder(cfg).apply({"params": params}, batch["input_ids"], batch["segment_ids"],
                                          batch["sequence_ids"], batch["position_ids"])
    return pool(hidden, batch["input_mask"], pooling)


def embed(model: LoadedModel, texts: Sequence[str], *, pooling: str = "mean", batch_size: int = 64,
          max_seq_length: int = 256, normalize: bool = False) -> np.ndarray:
    """Sentence embeddings: the last hidden states pooled over each text's real tokens.

    Args:
      model: any encoder.
      texts: the sentences.
      pooling: ``"mean"`` (all-MiniLM-L6-v2 and most Sentence-BERT models were trained with it), ``"cls"``
        (the ``[CLS]`` token's last hidden state) or ``"max"`` (per-feature maximum); padding never
        counts (:mod:`bert_jax.pooling`).
      batch_size: texts per forward pass.
      max_seq_length: longer texts are cut (with a warning).
      normalize: L2-normalise each vector (as Sentence-BERT's all-MiniLM-L6-v2 does).

    Returns:
      float32 ``[len(texts), hidden_size]``.

    Raises:
      ValueError: for an unknown ``pooling``.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")
    max_seq_length = min(max_seq_length, model.model_config.max_position_embeddings)
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = encode_texts(model.tokenizer, texts[start:start + batch_size], max_seq_length)
        chunks.append(np.asarray(_pooled(model.model_config, pooling, model.params["bert"], batch)))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, model.model_config.hidden_size), np.float32)
    return l2_normalize(vectors) if normalize else vectors


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero); float32 ``[N, D]``."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


METRICS = ("cosine", "ip", "l2")
# Each index kind's parameters and their defaults (faiss's names: M, efConstruction, efSearch, nlist, nprobe).
# ivf's nlist=0 means round(sqrt(N)) lists for N corpus vectors.
INDEX_PARAMS = {"flat": {}, "hnsw": {"m": 32, "ef_construction": 40, "ef_search": 64},
                "ivf": {"nlist": 0, "nprobe": 4}}
INDEXES = tuple(INDEX_PARAMS)


def parse_index_params(text: str) -> dict[str, int]:
    """``"m=32,ef_search=64"`` -> ``{"m": 32, "ef_search": 64}`` (integer values; ``""`` -> ``{}``).

    Raises:
      ValueError: naming the item that is not ``name=integer``.
    """
    params = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            params[name.strip()] = int(value)
        except ValueError:
            raise ValueError(f"index parameter {item!r}: expected name=integer, e.g. ef_search=64") from None
    return params


class NearestNeighbours:
    """Nearest-neighbour search over a fixed set of vectors with faiss, optionally with their texts.

    Index kinds (``index=``): ``"flat"``, exact (``IndexFlatIP`` / ``IndexFlatL2``); ``"hnsw"``, a
    navigable small-world graph (``IndexHNSWFlat``; ``m`` links per node, ``ef_construction``,
    ``ef_search`` candidates); ``"ivf"``, an inverted file (``IndexIVFFlat``) whose ``nlist`` k-means
    centroids are trained on the corpus vectors themselves and whose search visits ``nprobe`` lists.
    Metrics (``metric=``): ``"cosine"`` (inner product of L2-normalised corpus and query vectors),
    ``"ip"`` (raw inner product) and ``"l2"`` (squared Euclidean distance, smallest first).

    Attributes:
      kind: the index kind.
      metric: the metric.
      params: the kind's parameters as used (defaults filled in, ivf's ``nlist`` resolved).
      texts: the corpus texts (row ``i`` is vector ``i``), or None.
      info: free JSON-able metadata saved with the index (e.g. the model and pooling that made the vectors).
      index: the faiss index.
    """

    def __init__(self, vectors: np.ndarray, texts: Sequence[str] | None = None, *, index: str = "flat",
                 metric: str = "cosine", info: dict[str, Any] | None = None, **params: int):
        """Builds the index over ``vectors``.

        Args:
          vectors: float ``[N, D]`` corpus embeddings.
          texts: ``N`` texts, one per vector, kept (and saved) for printing results.
          index: one of :data:`INDEXES`.
          metric: one of :data:`METRICS`.
          info: metadata to keep with the index.
          **params: the kind's parameters (:data:`INDEX_PARAMS`), e.g. ``ef_search=128`` or ``nlist=16``.

        Raises:
          ValueError: for an unknown kind, metric or parameter, texts that do not match the vectors, or an
            ivf index with fewer corpus vectors than ``nlist``.
        """
        vectors = _as_matrix(vectors, "vectors")
        if index not in INDEX_PARAMS:
            raise ValueError(f"index={index!r}; expected one of {INDEXES}")
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}; expected one of {METRICS}")
        unknown = sorted(set(params) - set(INDEX_PARAMS[index]))
        if unknown:
            raise ValueError(f"unknown {index} index parameter(s) {unknown}; expected some of "
                             f"{sorted(INDEX_PARAMS[index])}")
        if texts is not None and len(texts) != len(vectors):
            raise ValueError(f"{len(texts)} texts for {len(vectors)} vectors")
        self.kind, self.metric, self.info = index, metric, dict(info or {})
        self.params = {**INDEX_PARAMS[index], **params}
        self.texts = None if texts is None else list(texts)
        vectors = self._prepare(vectors)
        n, dimension = vectors.shape
        faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if index == "flat":
            self.index = faiss.IndexFlatL2(dimension) if metric == "l2" else faiss.IndexFlatIP(dimension)
        elif index == "hnsw":
            self.index = faiss.IndexHNSWFlat(dimension, self.params["m"], faiss_metric)
            self.index.hnsw.efConstruction = self.params["ef_construction"]
        else:
            self.params["nlist"] = self.params["nlist"] or max(1, round(math.sqrt(n)))
            if n < self.params["nlist"]:
                raise ValueError(f"an ivf index with nlist={self.params['nlist']} lists needs at least that many "
                                 f"corpus vectors to train its centroids on; got {n}: lower nlist or use "
                                 "index='flat'")
            quantizer = faiss.IndexFlatL2(dimension) if metric == "l2" else faiss.IndexFlatIP(dimension)
            self.index = faiss.IndexIVFFlat(quantizer, dimension, self.params["nlist"], faiss_metric)
            self.index.train(vectors)
        self._apply_search_params()
        self.index.add(vectors)

    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(vectors) if self.metric == "cosine" else np.ascontiguousarray(vectors, np.float32)

    def _apply_search_params(self) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.params["ef_search"]
        elif self.kind == "ivf":
            self.index.nprobe = self.params["nprobe"]

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest corpus rows of each query.

        Args:
          queries: float ``[Q, D]``.
          k: neighbours per query (at most the corpus size).

        Returns:
          ``(scores float32 [Q, k], indices int64 [Q, k])``, best first: similarities for ``cosine`` / ``ip``
          (largest first), squared distances for ``l2`` (smallest first). An approximate index that finds
          fewer than ``k`` (an ivf search whose ``nprobe`` lists hold fewer) pads with index -1.

        Raises:
          ValueError: when the queries' width differs from the corpus vectors'.
        """
        queries = _as_matrix(queries, "queries")
        if queries.shape[1] != self.index.d:
            raise ValueError(f"queries have {queries.shape[1]} features; the index holds {self.index.d}")
        return self.index.search(self._prepare(queries), min(k, len(self)))

    def save(self, path: str) -> None:
        """Writes the faiss index to ``path`` and its settings, ``info`` and texts to ``path + ".json"``."""
        faiss.write_index(self.index, path)
        sidecar = {"index": self.kind, "metric": self.metric, "params": self.params, "size": len(self),
                   "info": self.info, "texts": self.texts}
        with open(path + ".json", "w", encoding="utf-8") as f:
            json.dump(sidecar, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> NearestNeighbours:
        """An index saved by :meth:`save`.

        Raises:
          FileNotFoundError: when the index or its ``.json`` sidecar is missing.
          ValueError: when they do not belong together.
        """
        for name in (path, path + ".json"):
            if not os.path.isfile(name):
                raise FileNotFoundError(f"{name}: no such file (NearestNeighbours.save writes the index and "
                                        "its .json sidecar)")
        with open(path + ".json", encoding="utf-8") as f:
            sidecar = json.load(f)
        self = cls.__new__(cls)
        self.kind, self.metric, self.params = sidecar["index"], sidecar["metric"], sidecar["params"]
        self.info, self.texts = sidecar["info"], sidecar["texts"]
        self.index = faiss.read_index(path)
        if self.index.ntotal != sidecar["size"] or (self.texts is not None and len(self.texts) != sidecar["size"]):
            raise ValueError(f"{path} holds {self.index.ntotal} vectors but {path}.json describes "
                             f"{sidecar['size']} (and {len(self.texts or [])} texts)")
        self._apply_search_params()
        return self


def _as_matrix(vectors: np.ndarray, name: str) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2 or not vectors.size:
        raise ValueError(f"{name}: expected a non-empty float [N, D] matrix, got shape {vectors.shape}")
    return vectors


def read_sentences(path: str, encoding: str = "utf-8") -> list[str]:
    """The texts of a ``.txt`` file (one a line; fastText ``__label__`` prefixes dropped), ``.tsv`` or ``.jsonl``."""
    records = local_text.read_labelled_texts(path, encoding=encoding, require_labels=False)
    return [record.text for record in records]
