"""The batch contract between the data pipelines and the trainer: field names, shapes and dtypes.

Every batch the loaders yield, and every batch a task, test or benchmark builds, is a ``dict`` of
NumPy ``int32`` arrays with exactly the fields below (``B`` = batch size, ``S`` = sequence length,
``P`` = max predictions per sequence). This module is the single place that defines them; import the
names from here instead of spelling them again. The fine-tuning specs (classification, regression,
span, tagging, multiple choice) follow at the end of the module; :data:`FIELD_DTYPES` names the few
fields that are not ``int32`` (the STS-B ``regression_target`` is float32).

Conventions:
  * Token ids follow the vocabulary: ``[PAD]`` is whatever id the tokenizer reports as pad (0 for the
    BERT uncased ``vocab.txt``). Padding positions have ``input_mask == 0``.
  * ``segment_ids`` is BERT's token type: 0 for sentence A (and ``[CLS]``), 1 for sentence B.
  * ``sequence_ids`` identifies packed sequences inside one row: 0 on padding, 1 for the first
    sequence, 2 for the second, ... Attention is allowed only between tokens with the same non-zero
    id. An unpacked row has ``sequence_ids == input_mask``.
  * ``position_ids`` restart at 0 for each packed sequence; an unpacked row has ``0..S-1``.
  * ``masked_lm_weights`` is 1.0-valued (stored as int32 1) on real predictions and 0 on padding
    predictions; the loss averages over real predictions only.
  * ``next_sentence_label`` is 0 when segment B really follows A ("IsNext") and 1 when B is a random
    span from another document ("NotNext"), the convention of the original BERT and Hugging Face.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Field name -> symbolic shape. Symbols: B batch, S sequence length, P max predictions, C choices.
PRETRAINING_FIELDS: dict[str, tuple[str, ...]] = {
    "input_ids": ("B", "S"),
    "segment_ids": ("B", "S"),
    "input_mask": ("B", "S"),
    "sequence_ids": ("B", "S"),
    "position_ids": ("B", "S"),
    "masked_lm_positions": ("B", "P"),
    "masked_lm_ids": ("B", "P"),
    "masked_lm_weights": ("B", "P"),
    "next_sentence_label": ("B",),
}

# The encoder inputs every task shares (a subset of the pretraining fields).
ENCODER_FIELDS: tuple[str, ...] = (
    "input_ids",
    "segment_ids",
    "input_mask",
    "sequence_ids",
    "position_ids",
)

DTYPE = np.int32
# Optional encoder field (Longformer): int32 [B, S], 1 on the tokens with global attention. A batch may carry
# it beside the fields of its spec; without it the model uses its task's choice (bert_jax.attention.global_tokens).
GLOBAL_ATTENTION_FIELD = "global_attention_mask"
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {GLOBAL_ATTENTION_FIELD: ("B", "S")}


def resolve_shape(symbolic: tuple[str, ...], dims: Mapping[str, int]) -> tuple[int, ...]:
    """Turns a symbolic shape such as ``("B", "S")`` into integers using ``dims``."""
    return tuple(int(dims[s]) for s in symbolic)


def validate_batch(
    batch: Mapping[str, np.ndarray],
    fields: Mapping[str, tuple[str, ...]] = PRETRAINING_FIELDS,
    dims: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Checks that ``batch`` follows the contract and returns the inferred dimensions.

    Args:
      batch: field name -> array.
      fields: the field spec to check against (default: pretraining).
      dims: optional expected dimensions, e.g. ``{"B": 8, "S": 128, "P": 20}``.

    Returns:
      The dimensions found, e.g. ``{"B": 8, "S": 128, "P": 20}``.

    Raises:
      ValueError: naming the field, when a field is missing, extra, of the wrong dtype (int32 unless
        :data:`FIELD_DTYPES` names another), or of a shape that disagrees with another field or with
        ``dims``.
    """
    missing = sorted(set(fields) - set(batch))
    extra = sorted(set(batch) - set(fields) - set(OPTIONAL_FIELDS))
    fields = {**fields, **{name: OPTIONAL_FIELDS[name] for name in OPTIONAL_FIELDS if name in batch}}
    if missing or extra:
        raise ValueError(f"batch fields do not match the contract: missing {missing}, unexpected {extra}")
    found: dict[str, int] = dict(dims or {})
    for name, symbolic in fields.items():
        array = batch[name]
        expected_dtype = field_dtype(name)
        if np.dtype(array.dtype) != expected_dtype:
            raise ValueError(f"batch field {name!r} has dtype {array.dtype}, expected {expected_dtype}")
        if array.ndim != len(symbolic):
            raise ValueError(f"batch field {name!r} has shape {array.shape}, expected {symbolic}")
        for symbol, size in zip(symbolic, array.shape):
            if found.setdefault(symbol, size) != size:
                raise ValueError(
                    f"batch field {name!r} has {symbol}={size} but another field or the request says "
                    f"{symbol}={found[symbol]}"
                )
    return found


def zeros_batch(
    fields: Mapping[str, tuple[str, ...]] = PRETRAINING_FIELDS, **dims: int
) -> dict[str, np.ndarray]:
    """An all-zero batch with the contract's shapes, e.g. for shape inference and compilation."""
    return {name: np.zeros(resolve_shape(shape, dims), field_dtype(name)) for name, shape in fields.items()}


# ---------------------------------------------------------------------------------------------
# Fine-tuning batches (data_pipelines/finetune/ builds them). Every row also carries the encoder
# fields above; an unpacked row has ``sequence_ids == input_mask`` and ``position_ids == 0..S-1``.
# ---------------------------------------------------------------------------------------------

# Fields whose dtype is not int32; every field not named here is int32.
FIELD_DTYPES: dict[str, type] = {
    "regression_target": np.float32,
}


def field_dtype(name: str) -> np.dtype:
    """The dtype of batch field ``name``: int32 unless :data:`FIELD_DTYPES` says otherwise."""
    return np.dtype(FIELD_DTYPES.get(name, DTYPE))


_ENCODER_SPEC: dict[str, tuple[str, ...]] = {name: ("B", "S") for name in ENCODER_FIELDS}

# Sentence (pair) classification, e.g. GLUE: ``label`` is the class index, -1 on unlabelled rows
# (test sets).
CLASSIFICATION_FIELDS: dict[str, tuple[str, ...]] = {**_ENCODER_SPEC, "label": ("B",)}

# Sentence-pair regression (STS-B): ``regression_target`` is float32, NaN on unlabelled rows.
REGRESSION_FIELDS: dict[str, tuple[str, ...]] = {**_ENCODER_SPEC, "regression_target": ("B",)}

# Extractive QA (SQuAD): one row per document window. ``start_positions``/``end_positions`` index
# the answer's first/last token in the row, or 0/0 (``[CLS]``) when the window does not contain it
# (or the question has no answer). ``example_index`` is the question's index in the example list and
# ``window_index`` the row's index in the window list, to map logits back for decoding.
SPAN_FIELDS: dict[str, tuple[str, ...]] = {
    **_ENCODER_SPEC,
    "start_positions": ("B",),
    "end_positions": ("B",),
    "example_index": ("B",),
    "window_index": ("B",),
}

# Token classification (NER): ``labels`` is the tag index on the FIRST sub-token of each word and 0
# elsewhere; ``label_weights`` is 1 on those first sub-tokens and 0 on the rest ([CLS], [SEP],
# continuation pieces, padding). Long sentences are split into windows, hence the two indexes.
TAGGING_FIELDS: dict[str, tuple[str, ...]] = {
    **_ENCODER_SPEC,
    "labels": ("B", "S"),
    "label_weights": ("B", "S"),
    "example_index": ("B",),
    "window_index": ("B",),
}

# Multiple choice (SWAG): C candidate rows per example; ``label`` is the correct choice, -1 if unknown.
MULTIPLE_CHOICE_FIELDS: dict[str, tuple[str, ...]] = {
    **{name: ("B", "C", "S") for name in ENCODER_FIELDS},
    "label": ("B",),
}
