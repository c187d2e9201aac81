"""The pretraining input pipeline on Grain: documents -> instances -> masking -> contract batches.

Per source (a weighted mixture of sources is mixed at the instance level)::

    groups of G documents of this process's shard   MapDataset.range(groups per epoch).repeat()
      -> document indices of group k in epoch e     global shuffle: a new permutation every epoch
      -> rows of those documents                    DocumentInstanceMaker (tokenize, NSP pairs or
                                                    segments; static masks); document d's rows
                                                    are seeded by (seed, source, epoch, process, d)
      -> to_iter_dataset -> flatten rows
    mix sources by weight -> window shuffle of rows -> [packing: FirstFit] -> batch
      -> dynamic masking (Grain random map, one NumPy call per batch) -> contract fields
      -> mp_prefetch (worker processes)

Every random choice comes from a seed, so the same seed, process count and worker count give the
same batches, and the iterator state (``iterator.get_state()``, a JSON-serialisable dict) resumes
the stream exactly, also in a fresh process.

Modes (``nsp`` / ``packing``): NSP pairs as in the original BERT; rows packed with document pieces
(``[CLS] piece [SEP]`` each, its own ``sequence_ids`` / ``position_ids``; no NSP: the
``next_sentence_label`` is 0 and the task must train with ``nsp_weight=0``); or (both off) one piece
per padded row.

Row shuffling: the rows of a document group are permuted, then a window shuffle reads
``shuffle_buffer_size`` consecutive rows and emits them in a random order. Together with the global
document shuffle this spreads a document's rows over many batches. Book-length documents give
thousands of rows each: use a larger window or smaller groups for such sources.

This code runs in loader worker processes: it never imports the model or touches jax devices (Grain
itself imports jax when jax is installed).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import grain
from absl import flags
import ml_collections
import numpy as np

from data_pipelines.instances import NSP_MODES, DocumentInstanceMaker, pad_rows
from data_pipelines.masking import NO_LABEL, TokenMasker
from data_pipelines.rows import layout_rows

MASKING_MODES = ("dynamic", "static")
LABELS = "masked_lm_labels"  # per-token labels of static masking (masking.NO_LABEL elsewhere)
# Packed features the FirstFit packer adds next to each packed feature.
_PACKED_SEQUENCE_IDS = "input_ids_segment_ids"
_PACKED_POSITIONS = "input_ids_positions"
# Seed streams (folded into the user seed so each random decision has its own stream).
_DOCUMENT_ORDER, _DOCUMENT_ROWS, _ROW_SHUFFLE, _PACKING, _MASKING = range(5)


def _default_sources() -> tuple[dict, ...]:
    from data_pipelines.sources import demo_dump_path  # sources import TFDS; only needed here

    return ({"name": "wikipedia_dump", "dump_path": demo_dump_path(), "weight": 1.0},)


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The pretraining data settings (the run config's ``data`` section), with the original BERT phase-1
    values as defaults; :func:`default_data_config` is this as a ConfigDict."""

    # Document sources (data_pipelines.sources specs); 'weight' sets each one's share of the
    # instances, e.g. [{'name': 'wikipedia_dump', ..., 'weight': 3.0}, {'name': 'books', ..., 'weight': 1.0}].
    sources: tuple[dict, ...] = dataclasses.field(default_factory=_default_sources)
    # Tokens per row, S (128 for phase 1 of the original recipe, 512 for phase 2).
    max_seq_length: int = 128
    # Masked-LM predictions per row, P (20 at S=128, 80 at S=512; MLPerf uses 76 at 512).
    max_predictions_per_seq: int = 20
    # Fraction of maskable tokens chosen for prediction.
    masked_lm_prob: float = 0.15
    # NSP: probability that a document's target length is a random shorter one.
    short_seq_prob: float = 0.1
    # True: sentence pairs with next-sentence labels (original BERT). Excludes packing.
    nsp: bool = True
    # NSP labels: "paper" (original: a one-sentence chunk is always NotNext, ~60% NotNext on short
    # documents) or "balanced" (a fair coin per pair, 50%; lone final sentences make no pair).
    nsp_mode: str = "paper"
    # True (with nsp False): pack "[CLS] piece [SEP]" pieces of several documents per row (no NSP).
    packing: bool = False
    # Packing: rows packed together by Grain's first-fit packer (0 = the per-process batch size).
    packing_bins: int = 0
    # Packing (or nsp and packing both off): segments end only at sentence ends (RoBERTa's rule;
    # ~13% of a 128-token row stays empty) instead of every S - 2 tokens (rows ~99% full).
    whole_sentences: bool = False
    # Mask all WordPieces of a word together.
    whole_word_masking: bool = False
    # 'dynamic': new masks every time a row is read; 'static': fixed masks, dupe_factor variants.
    masking: str = "dynamic"
    # Static masking: distinct (instances, masks) variants per document, cycled through by epoch.
    dupe_factor: int = 10
    # Shuffle document order globally, differently each epoch.
    shuffle_documents: bool = True
    # Rows shuffled together after instance creation (a window shuffle; each group's rows are also
    # shuffled among themselves); 1 disables it.
    shuffle_buffer_size: int = 2048
    # Documents with fewer tokens are skipped (counted and logged).
    min_document_tokens: int = 2
    # Documents read together; NSP random next segments come from the other documents of the group.
    documents_per_group: int = 8
    # Threads that build document groups ahead of use in each process (0 = build on demand).
    read_threads: int = 1
    # Document groups those threads build ahead.
    read_prefetch: int = 4
    # Batches each worker process prepares ahead.
    worker_buffer_size: int = 2

    @classmethod
    def from_config(cls, data_cfg: Mapping[str, Any]) -> "DataSettings":
        if hasattr(data_cfg, "to_dict"):
            data_cfg = data_cfg.to_dict()
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in data_cfg]
        unknown = sorted(set(data_cfg) - set(names))
        if missing or unknown:
            raise ValueError(
                f"data config lacks {missing} and has unknown fields {unknown}; the fields are those of "
                "data_pipelines.loader.default_data_config()"
            )
        values = {name: data_cfg[name] for name in names}
        values["sources"] = tuple(dict(spec) for spec in values["sources"])
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        if not self.sources:
            raise ValueError("data config 'sources' is empty; name at least one source spec")
        for spec in self.sources:
            if float(spec.get("weight", 1.0)) <= 0:
                raise ValueError(f"data config source {spec}: 'weight' must be > 0")
        if self.nsp and self.packing:
            raise ValueError("data config: 'nsp' and 'packing' exclude each other (packed rows carry no pairs)")
        if self.nsp_mode not in NSP_MODES:
            raise ValueError(f"data config 'nsp_mode' must be one of {NSP_MODES}, got {self.nsp_mode!r}")
        if self.masking not in MASKING_MODES:
            raise ValueError(f"data config 'masking' must be one of {MASKING_MODES}, got {self.masking!r}")
        if self.masking == "static" and self.dupe_factor < 1:
            raise ValueError(f"data config 'dupe_factor' must be >= 1, got {self.dupe_factor}")
        if self.max_seq_length < 5:
            raise ValueError(f"data config 'max_seq_length' must be >= 5, got {self.max_seq_length}")
        if self.documents_per_group < 1:
            raise ValueError(f"data config 'documents_per_group' must be >= 1, got {self.documents_per_group}")
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"data config 'shuffle_buffer_size' must be >= 1, got {self.shuffle_buffer_size}")


def default_data_config() -> ml_collections.ConfigDict:
    """The pretraining data settings (:class:`DataSettings`' fields and defaults) as a ConfigDict."""
    values = dataclasses.asdict(DataSettings())
    values["sources"] = [dict(spec) for spec in values["sources"]]
    return ml_collections.ConfigDict(values)


def _seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one random stream, derived from the user seed and stream keys."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


class _Shard:
    """Documents ``start, start + step, ...`` of a source: one process's share, random access."""

    def __init__(self, source, start: int, step: int):
        self.source = source
        self.start = start
        self.step = step
        self.name = getattr(source, "name", "documents")

    def __len__(self) -> int:
        return len(range(self.start, len(self.source), self.step))

    def __getitem__(self, index: int) -> str:
        return self.source[self.start + operator.index(index) * self.step]


class _GroupRows(grain.transforms.MapWithIndex):
    """Index of the repeated group dataset -> the rows of that group of shuffled documents.

    An epoch's ``N`` documents form ``max(1, N // G)`` groups of ``G`` to ``2G - 1`` consecutive
    positions of that epoch's document order (never a lone document, which would have no partner
    for NSP random spans); the order is a permutation of the shard (Grain's ``index_shuffle``: O(1)
    per position, nothing stored).
    """

    def __init__(self, maker: DocumentInstanceMaker, masker: TokenMasker, settings: DataSettings,
                 seed: int, source_index: int, process_index: int):
        self.maker = maker
        self.masker = masker
        self.settings = settings
        self.seed = seed
        self.source_index = source_index
        self.process_index = process_index
        self.num_documents = len(maker.documents)
        self.group_size = settings.documents_per_group
        self.groups_per_epoch = max(1, self.num_documents // self.group_size)

    def documents_of(self, index: int) -> tuple[int, int, list[int]]:
        """``(variant, group in epoch, document indices)`` of group ``index``.

        The variant keys all randomness. Dynamic masking: the variant is the epoch. Static masking:
        the epoch modulo ``dupe_factor``, so epochs ``e`` and ``e + dupe_factor`` repeat the same
        documents, instances and masks.
        """
        epoch, group = divmod(index, self.groups_per_epoch)
        settings = self.settings
        variant = epoch % settings.dupe_factor if settings.masking == "static" else epoch
        positions = range(
            group * self.num_documents // self.groups_per_epoch,
            (group + 1) * self.num_documents // self.groups_per_epoch,
        )
        if not settings.shuffle_documents:
            return variant, group, list(positions)
        order_seed = _seed(self.seed, _DOCUMENT_ORDER, self.source_index, self.process_index, variant)
        last = self.num_documents - 1
        return variant, group, [
            grain.experimental.index_shuffle(p, max_index=last, seed=order_seed, rounds=4) for p in positions
        ]

    def map_with_index(self, index: int, _: int) -> list[dict[str, np.ndarray]]:
        variant, group, documents = self.documents_of(index)
        rngs = [
            np.random.default_rng([self.seed, _DOCUMENT_ROWS, self.source_index, variant, self.process_index, d])
            for d in documents
        ]
        settings = self.settings
        static = settings.masking == "static"
        out: list[dict[str, np.ndarray]] = []
        for rows, rng in zip(self.maker.rows(documents, rngs), rngs):
            if rows is None:  # skipped (counted by the maker)
                continue
            if settings.packing:
                out.extend(self._packable(rows, rng if static else None))
                continue
            if not settings.nsp:
                rows = _segment_rows(rows, settings.max_seq_length, self.maker.tokenizer.pad_id)
            if static:
                rows["input_ids"], rows[LABELS] = self.masker.mask(rows["input_ids"], rng)
            out.extend({key: value[i] for key, value in rows.items()} for i in range(len(rows["input_ids"])))
        # Interleave the group's documents (cheap, and it lets the window shuffle be coarser).
        order = np.random.default_rng(
            [self.seed, _ROW_SHUFFLE, self.source_index, variant, self.process_index, group]
        ).permutation(len(out))
        return [out[i] for i in order]

    def _packable(self, segments: list[np.ndarray], rng: np.random.Generator | None) -> list[dict]:
        if rng is None:
            return [{"input_ids": segment} for segment in segments]
        block = pad_rows(segments, self.settings.max_seq_length, self.maker.tokenizer.pad_id)
        corrupted, labels = self.masker.mask(block, rng)
        return [
            {"input_ids": corrupted[i, : s.size], LABELS: labels[i, : s.size]} for i, s in enumerate(segments)
        ]


def _segment_rows(segments: list[np.ndarray], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """One ``[CLS] segment [SEP]`` (already wrapped) per padded row, no NSP (label 0)."""
    rows = layout_rows(segments, length=length, pad_id=pad_id)
    rows["next_sentence_label"] = np.zeros(len(segments), dtype=np.int32)
    return rows


class _Flatten(grain.experimental.FlatMapTransform):
    """A document's list of rows -> the rows, one element each."""

    max_fan_out = 1 << 16

    def flat_map(self, element: list) -> list:
        return element


class _WindowShuffle(grain.IterDataset):
    """Reads ``window_size`` elements, emits them in a random order, repeats (checkpointable).

    The semantics of ``grain.experimental.WindowShuffleIterDataset``, but the window's permutation is
    one NumPy call: Grain's ``index_shuffle`` costs ~3.5 ms per element for a 16-element window,
    ~1 ms at 64 and ~70 us at 1024. The state is the parent's state at the window start, the window
    index and the position in the window; restoring re-reads the window.
    """

    def __init__(self, parent: grain.IterDataset, *, window_size: int, seed: int):
        super().__init__(parent)
        self._window_size = window_size
        self._seed = seed

    def __iter__(self) -> grain.DatasetIterator:
        return _WindowShuffleIterator(self._parent.__iter__(), self._window_size, self._seed)


class _WindowShuffleIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, window_size: int, seed: int):
        super().__init__(parent)
        self._window_size = window_size
        self._seed = seed
        self._window_start = self._parent.get_state()
        self._window_index = 0  # the window being emitted (or the next one, before it is read)
        self._window: list | None = None  # None: not read yet
        self._position = 0

    def _read_window(self) -> None:
        self._window_start = self._parent.get_state()
        window = []
        for _ in range(self._window_size):
            try:
                window.append(next(self._parent))
            except StopIteration:
                break
        order = np.random.default_rng([self._seed, self._window_index]).permutation(len(window))
        self._window = [window[i] for i in order]
        self._position = 0

    def __next__(self):
        if self._window is not None and self._position == len(self._window):
            if len(self._window) < self._window_size:
                raise StopIteration  # the parent ran out while this window was read
            self._window_index += 1
            self._window = None
        if self._window is None:
            self._read_window()
        if self._position == len(self._window):
            raise StopIteration
        element = self._window[self._position]
        self._window[self._position] = None  # emitted: free it
        self._position += 1
        return element

    def get_state(self) -> dict:
        return {"window_start": self._window_start, "window_index": self._window_index, "position": self._position}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["window_start"])
        self._window_index = state["window_index"]
        self._read_window()
        self._position = state["position"]


class _FinishBatch:
    """Stacked rows -> contract batch: masks (dynamic) and the prediction and attention fields."""

    def __init__(self, masker: TokenMasker, packed: bool):
        self.masker = masker
        self.packed = packed

    def finish(self, rows: dict[str, np.ndarray], rng: np.random.Generator | None) -> dict[str, np.ndarray]:
        if rng is not None:
            corrupted, labels = self.masker.mask(rows["input_ids"], rng)
        else:
            corrupted, labels = rows["input_ids"], rows[LABELS]
        out = self.masker.predictions(corrupted, labels)
        batch_size, length = corrupted.shape
        if self.packed:
            sequence_ids = rows[_PACKED_SEQUENCE_IDS].astype(np.int32)
            out["sequence_ids"] = sequence_ids
            out["position_ids"] = rows[_PACKED_POSITIONS].astype(np.int32)
            out["input_mask"] = (sequence_ids > 0).astype(np.int32)
            out["segment_ids"] = np.zeros((batch_size, length), np.int32)
            out["next_sentence_label"] = np.zeros(batch_size, np.int32)
        else:
            out["input_mask"] = rows["input_mask"].astype(np.int32)
            out["sequence_ids"] = out["input_mask"].copy()
            out["position_ids"] = np.broadcast_to(np.arange(length, dtype=np.int32), (batch_size, length)).copy()
            out["segment_ids"] = rows["segment_ids"].astype(np.int32)
            out["next_sentence_label"] = rows["next_sentence_label"].astype(np.int32)
        return out


class _DynamicMasking(grain.transforms.RandomMap):
    def __init__(self, finisher: _FinishBatch):
        self.finisher = finisher

    def random_map(self, element, rng: np.random.Generator):
        return self.finisher.finish(element, rng)


class _StaticMasking(grain.transforms.Map):
    def __init__(self, finisher: _FinishBatch):
        self.finisher = finisher

    def map(self, element):
        return self.finisher.finish(element, None)


class PretrainingLoader:
    """An iterable of contract batches (``data_pipelines.batch.PRETRAINING_FIELDS``).

    ``iter(loader)`` gives a Grain ``DatasetIterator``: ``get_state()`` returns a JSON-serialisable
    dict and ``set_state(state)`` resumes from it (in any process). Close iterators of a loader with
    worker processes (``iterator.close()``) when done with them.

    Attributes:
      dataset: the Grain ``IterDataset`` of batches.
      dims: ``{'B': per-process batch, 'S': max_seq_length, 'P': max_predictions_per_seq}``.
      makers: the per-source instance makers of this process; their ``skip_log`` counts skipped
        documents read in this process (with worker processes, each worker counts and logs its own).
    """

    def __init__(self, dataset: grain.IterDataset, dims: dict[str, int], makers: Sequence[DocumentInstanceMaker]):
        self.dataset = dataset
        self.dims = dims
        self.makers = list(makers)

    def __iter__(self) -> grain.DatasetIterator:
        return iter(self.dataset)

    def skipped_documents(self) -> dict[str, dict[str, int]]:
        """Source name -> {reason: count} of documents skipped in this process so far."""
        return {maker.skip_log.source_name: dict(maker.skip_log.skipped) for maker in self.makers}


def make_pretraining_loader(
    data_cfg: Mapping[str, Any],
    tokenizer,
    *,
    batch_size: int,
    split: str,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    num_epochs: int | None = None,
    sources: Sequence[tuple[Any, float]] | None = None,
) -> PretrainingLoader:
    """Builds the pretraining loader for one process.

    Args:
      data_cfg: a ConfigDict or mapping with the fields of :func:`default_data_config`.
      tokenizer: a ``data_pipelines.tokenizer.Tokenizer``.
      batch_size: the global batch size; this process yields ``batch_size // process_count`` rows.
      split: ``'train'``, ``'eval'`` or ``'all'`` (passed to ``data_pipelines.sources.get_source``).
      seed: the seed of every random choice (document order, instances, shuffles, masks).
      process_index: this process's index; it reads documents ``process_index::process_count``.
      process_count: number of processes reading disjoint shards.
      worker_count: Grain worker processes (0: everything in this process). Each worker builds
        whole batches from its share of the document groups, so the batches depend on the worker
        count (deterministically for a given count).
      num_epochs: passes over each source's documents (None: forever). With several sources, the
        stream stops when the first source runs out; the last incomplete batch is dropped.
      sources: already opened ``(documents, weight)`` pairs to read instead of the config's
        ``sources`` specs; documents are random access (``len``, ``[i] -> str``) and picklable.

    Returns:
      The loader; batches are dicts of int32 arrays that pass ``data_pipelines.batch.validate_batch``.

    Raises:
      ValueError: a bad config, batch size or process index.
      FileNotFoundError: from ``data_pipelines.sources`` when a dataset is not prepared (the message
        names the command that prepares it).
    """
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if batch_size < process_count or batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} is not divisible by process_count {process_count}")
    rows_per_batch = batch_size // process_count
    settings = DataSettings.from_config(data_cfg)
    if sources is None:
        from data_pipelines.sources import get_source  # sources import TFDS; only needed here

        sources = [(get_source(spec, split), float(spec.get("weight", 1.0))) for spec in settings.sources]
    masker = TokenMasker.from_tokenizer(
        tokenizer,
        masked_lm_prob=settings.masked_lm_prob,
        max_predictions_per_seq=settings.max_predictions_per_seq,
        whole_word_masking=settings.whole_word_masking,
    )
    streams, makers = [], []
    for source_index, (source, _) in enumerate(sources):
        group_rows = _GroupRows(
            _maker(source, settings, tokenizer, process_index, process_count),
            masker, settings, seed, source_index, process_index,
        )
        groups = grain.MapDataset.range(group_rows.groups_per_epoch).repeat(num_epochs).map_with_index(group_rows)
        read_options = grain.ReadOptions(
            num_threads=settings.read_threads, prefetch_buffer_size=settings.read_prefetch
        )
        streams.append(grain.experimental.FlatMapIterDataset(groups.to_iter_dataset(read_options), _Flatten()))
        makers.append(group_rows.maker)
    rows = streams[0] if len(streams) == 1 else grain.IterDataset.mix(streams, [w for _, w in sources])
    if settings.shuffle_buffer_size > 1:
        rows = _WindowShuffle(rows, window_size=settings.shuffle_buffer_size,
                              seed=_seed(seed, _ROW_SHUFFLE, process_index))
    if settings.packing:
        rows = _pack(rows, settings, tokenizer.pad_id, settings.packing_bins or rows_per_batch,
                     _seed(seed, _PACKING, process_index))
    batches = rows.batch(rows_per_batch, drop_remainder=True)
    finisher = _FinishBatch(masker, settings.packing)
    if settings.masking == "dynamic":
        batches = batches.random_map(_DynamicMasking(finisher), seed=_seed(seed, _MASKING, process_index))
    else:
        batches = batches.map(_StaticMasking(finisher))
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():
            # Grain's worker processes read its absl flags; outside an absl app (tests, notebooks)
            # nothing has parsed them, so take the defaults.
            flags.FLAGS.mark_as_parsed()
        batches = batches.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=worker_count, per_worker_buffer_size=settings.worker_buffer_size
            )
        )
    dims = {"B": rows_per_batch, "S": settings.max_seq_length, "P": settings.max_predictions_per_seq}
    return PretrainingLoader(batches, dims, makers)


def _maker(source, settings: DataSettings, tokenizer, process_index: int, process_count: int) -> DocumentInstanceMaker:
    """The instance maker over this process's shard of ``source``."""
    shard = _Shard(source, process_index, process_count)
    if len(shard) == 0:
        raise ValueError(
            f"source {shard.name!r} has {len(source)} documents: none for process {process_index} of {process_count}"
        )
    return DocumentInstanceMaker(
        shard, tokenizer, max_seq_length=settings.max_seq_length, nsp=settings.nsp,
        short_seq_prob=settings.short_seq_prob, min_document_tokens=settings.min_document_tokens,
        whole_sentences=settings.whole_sentences, source_name=shard.name, nsp_mode=settings.nsp_mode,
    )


def _pack(rows: grain.IterDataset, settings: DataSettings, pad_id: int, num_bins: int, seed: int) -> grain.IterDataset:
    """Grain's first-fit packing of ``[CLS] ... [SEP]`` segments (and their static labels) into rows."""
    lengths = {"input_ids": settings.max_seq_length}
    padding = {"input_ids": pad_id}
    if settings.masking == "static":
        lengths[LABELS] = settings.max_seq_length
        padding[LABELS] = NO_LABEL
    return grain.experimental.FirstFitPackIterDataset(
        rows, length_struct=lengths, num_packing_bins=num_bins, seed=seed, shuffle_bins=True, padding_struct=padding
    )
