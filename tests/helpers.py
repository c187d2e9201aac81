"""Helpers shared by several test modules (import them from here, never from another ``test_*.py``)."""

import numpy as np

from data_pipelines import batch as batch_lib

CLS, SEP, MASK = 101, 102, 103  # the BERT uncased special ids; words are drawn from the ids above them


def random_pretraining_batch(
    seed: int, batch_size: int, seq_len: int, max_predictions: int, vocab_size: int
) -> dict[str, np.ndarray]:
    """A BERT-style pretraining batch: [CLS] A [SEP] B [SEP], padding, ~15% masked, NSP labels.

    Rows have different lengths (so padding and the number of real predictions vary from row to row);
    masked tokens are replaced by [MASK] and their original ids become ``masked_lm_ids``.
    """
    rng = np.random.default_rng(seed)
    batch = batch_lib.zeros_batch(B=batch_size, S=seq_len, P=max_predictions)
    for row in range(batch_size):
        length = int(rng.integers(seq_len // 2, seq_len + 1))
        len_a = int(rng.integers(1, length - 3))
        tokens = rng.integers(MASK + 1, vocab_size, size=length)
        tokens[0], tokens[1 + len_a], tokens[length - 1] = CLS, SEP, SEP
        batch["input_ids"][row, :length] = tokens
        batch["segment_ids"][row, 2 + len_a:length] = 1
        batch["input_mask"][row, :length] = 1
        batch["sequence_ids"][row, :length] = 1
        batch["position_ids"][row] = np.arange(seq_len)
        candidates = [i for i in range(length) if tokens[i] not in (CLS, SEP)]
        count = min(max_predictions, max(1, round(0.15 * len(candidates))))
        positions = np.sort(rng.choice(candidates, size=count, replace=False))
        batch["masked_lm_positions"][row, :count] = positions
        batch["masked_lm_ids"][row, :count] = tokens[positions]
        batch["masked_lm_weights"][row, :count] = 1
        batch["input_ids"][row, positions] = MASK
        batch["next_sentence_label"][row] = rng.integers(0, 2)
    batch_lib.validate_batch(batch)
    return batch
