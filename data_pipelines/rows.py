"""BERT's row layout, built in one place: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``, right-padded.

Between the two texts of a pair stands the tokenizer's ``pair_separator`` (``Tokenizer.pair_separator``:
``[SEP]``, or RoBERTa's ``</s> </s>``, so a BPE pair is ``<s> a </s></s> b </s>`` as transformers builds it).

Pretraining instances (``instances.pair_rows``, the loader's single-segment rows), fine-tuning features
(``finetune.features.encoder_row``) and inference (``bert_jax.inference.encode_texts``) all lay their
rows out with :func:`encoder_rows` (or :func:`layout_rows` for sequences that already hold their
special tokens). Segment id 0 covers ``[CLS]``, ``a`` and the first ``[SEP]``; 1 covers the rest of the
separator (RoBERTa's second ``</s>``), ``b`` and the last ``[SEP]``; padding is 0 everywhere (so segment 0
less its last token is ``[CLS] a`` whatever the separator: Longformer's question tokens). NumPy only (no JAX).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def layout_rows(
    sequences: Sequence[np.ndarray | Sequence[int]],
    *,
    length: int,
    pad_id: int,
    first_lengths: Sequence[int] | None = None,
    positions: bool = False,
) -> dict[str, np.ndarray]:
    """Pads complete id sequences (special tokens included) into rows.

    Args:
      sequences: ``n`` int sequences, each at most ``length`` long.
      length: ``S``, the padded length.
      pad_id: the padding id.
      first_lengths: per row, how many leading tokens have segment id 0 (the rest 1); None: all 0.
      positions: also return ``sequence_ids`` (1 on real tokens) and ``position_ids`` (``0..S-1``).

    Returns:
      ``input_ids``, ``segment_ids``, ``input_mask`` (and with ``positions`` ``sequence_ids``,
      ``position_ids``), each int32 ``[n, S]``.

    Raises:
      ValueError: when a sequence is longer than ``length`` (truncate first).
    """
    n = len(sequences)
    input_ids = np.full((n, length), pad_id, dtype=np.int32)
    segment_ids = np.zeros((n, length), dtype=np.int32)
    lengths = np.zeros(n, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        size = len(sequence)
        if size > length:
            raise ValueError(f"{size} tokens with specials do not fit max_seq_length={length}; truncate first")
        input_ids[row, :size] = sequence
        if first_lengths is not None:
            segment_ids[row, first_lengths[row]:size] = 1
        lengths[row] = size
    input_mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    rows = {"input_ids": input_ids, "segment_ids": segment_ids, "input_mask": input_mask}
    if positions:
        rows["sequence_ids"] = input_mask.copy()
        rows["position_ids"] = np.broadcast_to(np.arange(length, dtype=np.int32), (n, length)).copy()
    return rows


def encoder_rows(
    first: Sequence[np.ndarray | Sequence[int]],
    second: Sequence[np.ndarray | Sequence[int] | None] | None = None,
    *,
    length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
    positions: bool = False,
    pair_separator: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Lays out ``[CLS] a [SEP] (b [SEP])`` rows from token ids without special tokens.

    Args:
      first: ``n`` int sequences, the ``a`` texts (already truncated to fit).
      second: ``n`` ``b`` texts (an entry may be None: single text), or None for single texts only.
      length: ``S``, the padded length.
      cls_id, sep_id, pad_id: the special ids.
      positions: also return ``sequence_ids`` and ``position_ids`` (see :func:`layout_rows`).
      pair_separator: the ids between ``a`` and ``b`` (``Tokenizer.pair_separator``); None: ``[sep_id]``.

    Returns:
      int32 ``[n, S]`` arrays: ``input_ids``, ``segment_ids``, ``input_mask`` (+ the two of ``positions``).

    Raises:
      ValueError: when a row does not fit ``length``.
    """
    separator = np.asarray([sep_id] if pair_separator is None else pair_separator, np.int32)
    sequences, first_lengths = [], []
    for row, tokens_a in enumerate(first):
        tokens_b = None if second is None else second[row]
        pieces = [[cls_id], np.asarray(tokens_a, np.int32)]
        pieces += [[sep_id]] if tokens_b is None else [separator, np.asarray(tokens_b, np.int32), [sep_id]]
        sequences.append(np.concatenate(pieces))
        first_lengths.append(len(tokens_a) + 2)  # [CLS] a [SEP]: the rest of a separator is segment 1
    return layout_rows(sequences, length=length, pad_id=pad_id, first_lengths=first_lengths, positions=positions)
