"""Masked-LM corruption: choose tokens to predict and replace them (80% [MASK], 10% random, 10% kept).

Everything here works on whole ``[rows, S]`` blocks of token ids with vectorised NumPy: a batch for
dynamic masking, or the instances of one document for static masking. There is no per-token Python
loop; whole-word masking loops only over a handful of "rounds" per block (see
:meth:`TokenMasker.select`).

The result is expressed as per-token ``labels``: the original id where a token is to be predicted and
``-1`` elsewhere. :meth:`TokenMasker.predictions` turns labels into the contract's
``masked_lm_positions`` / ``masked_lm_ids`` / ``masked_lm_weights`` (see ``data_pipelines/batch.py``).
The labels form survives packing (it is one more per-token feature), which is what static masking of
packed rows needs.

Recipe (Devlin et al., 2018; google-research/bert ``create_pretraining_data.py``):
  * Per row, ``num_to_predict = min(max_predictions_per_seq, max(1, round(n * masked_lm_prob)))``
    with ``n`` the number of maskable tokens (the original counts ``[CLS]``/``[SEP]`` in ``n``; here
    only tokens that can be chosen count, so the chosen fraction is ``masked_lm_prob`` of real text).
  * Maskable: every token except the tokenizer's special ids (``[PAD]``, ``[UNK]``, ``[CLS]``,
    ``[SEP]``, ``[MASK]``).
  * Whole-word masking: the candidates are words (a word-start WordPiece plus the continuation pieces
    after it); words are visited in random order and a word is taken only if all its pieces still fit
    in ``num_to_predict`` (otherwise it is skipped and smaller words may still fill the budget), exactly
    the original's greedy rule.
  * Each chosen token independently becomes ``[MASK]`` (80%), a random token (10%), or stays (10%).
    Random tokens come from the real vocabulary: special ids and ``[unusedN]``-style placeholders are
    never drawn.
"""

from __future__ import annotations

import re

import numpy as np

# Not-a-label marker in per-token labels.
NO_LABEL = -1
# Vocabulary placeholders such as BERT's "[unused17]": never used as a random replacement.
_PLACEHOLDER_TOKEN = re.compile(r"^\[[^\[\]]+\]$")
# Sort key for tokens/words that can never be chosen (random keys lie in [0, 1)).
_NEVER = 2.0


class TokenMasker:
    """Chooses and corrupts masked-LM targets for blocks of token ids.

    Picklable (plain NumPy tables), so it travels to loader worker processes.

    Attributes:
      masked_lm_prob: fraction of maskable tokens to predict.
      max_predictions_per_seq: ``P``, the cap on predictions per row.
      whole_word: whether whole words are masked together.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        special_ids: np.ndarray,
        mask_id: int,
        replacement_ids: np.ndarray,
        masked_lm_prob: float = 0.15,
        max_predictions_per_seq: int = 20,
        word_start_mask: np.ndarray | None = None,
        mask_token_prob: float = 0.8,
        random_token_prob: float = 0.1,
    ):
        """Builds the lookup tables.

        Args:
          vocab_size: number of token ids.
          special_ids: int ``[k]`` ids never chosen for prediction.
          mask_id: the ``[MASK]`` id.
          replacement_ids: int ``[m]`` ids a chosen token may be replaced with (the 10% random case).
          masked_lm_prob: fraction of maskable tokens to predict, in (0, 1].
          max_predictions_per_seq: ``P``, at least 1.
          word_start_mask: bool ``[vocab_size]`` (True where a token starts a word) to mask whole
            words; None masks single tokens.
          mask_token_prob: probability that a chosen token becomes ``[MASK]``.
          random_token_prob: probability that a chosen token becomes a random token.

        Raises:
          ValueError: for probabilities outside their range, ``P < 1``, an empty replacement pool, or
            tables whose size disagrees with ``vocab_size``.
        """
        if not 0.0 < masked_lm_prob <= 1.0:
            raise ValueError(f"masked_lm_prob must be in (0, 1], got {masked_lm_prob}")
        if max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq must be >= 1, got {max_predictions_per_seq}")
        if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1:
            raise ValueError(
                f"mask_token_prob ({mask_token_prob}) and random_token_prob ({random_token_prob}) must be "
                "non-negative and sum to at most 1"
            )
        replacement_ids = np.asarray(replacement_ids, dtype=np.int32)
        if replacement_ids.size == 0:
            raise ValueError("the pool of random replacement tokens is empty")
        self.masked_lm_prob = float(masked_lm_prob)
        self.max_predictions_per_seq = int(max_predictions_per_seq)
        self.mask_id = int(mask_id)
        self.mask_token_prob = float(mask_token_prob)
        self.random_token_prob = float(random_token_prob)
        self._replacement_ids = replacement_ids
        self._maskable = np.ones(vocab_size, dtype=bool)
        self._maskable[np.asarray(special_ids, dtype=np.int64)] = False
        self.whole_word = word_start_mask is not None
        if word_start_mask is not None:
            word_start_mask = np.asarray(word_start_mask, dtype=bool)
            if word_start_mask.shape != (vocab_size,):
                raise ValueError(f"word_start_mask has shape {word_start_mask.shape}, expected ({vocab_size},)")
        self._word_start = word_start_mask

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer,
        *,
        masked_lm_prob: float = 0.15,
        max_predictions_per_seq: int = 20,
        whole_word_masking: bool = False,
    ) -> "TokenMasker":
        """A masker for ``tokenizer`` (a ``data_pipelines.tokenizer.Tokenizer``).

        Random replacements are drawn from every id except ``tokenizer.special_ids()`` and bracketed
        placeholders such as ``[unused0]``.
        """
        special_ids = tokenizer.special_ids()
        vocab = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
        is_real = np.array([not _PLACEHOLDER_TOKEN.match(token) for token in vocab], dtype=bool)
        is_real[special_ids] = False
        return cls(
            vocab_size=tokenizer.vocab_size,
            special_ids=special_ids,
            mask_id=tokenizer.mask_id,
            replacement_ids=np.flatnonzero(is_real),
            masked_lm_prob=masked_lm_prob,
            max_predictions_per_seq=max_predictions_per_seq,
            word_start_mask=tokenizer.word_start_mask() if whole_word_masking else None,
        )

    def maskable(self, input_ids: np.ndarray) -> np.ndarray:
        """bool, same shape as ``input_ids``: True where a token may be chosen for prediction."""
        return self._maskable[input_ids]

    def budgets(self, maskable: np.ndarray) -> np.ndarray:
        """int ``[rows]``: how many tokens to predict in each row of a bool ``[rows, S]`` maskable map."""
        num_maskable = maskable.sum(axis=1)
        wanted = np.maximum(1, np.round(num_maskable * self.masked_lm_prob).astype(np.int64))
        return np.minimum(np.minimum(wanted, self.max_predictions_per_seq), num_maskable)

    def select(self, input_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Chooses the tokens to predict.

        Args:
          input_ids: int ``[rows, S]``.
          rng: the random source.

        Returns:
          bool ``[rows, S]``, True at chosen positions; row ``r`` has ``budgets(...)[r]`` of them
          (whole-word masking: at most that many, words are never split).
        """
        maskable = self.maskable(input_ids)
        budget = self.budgets(maskable)
        if self.whole_word:
            return self._select_whole_words(input_ids, maskable, budget, rng)
        keys = np.where(maskable, rng.random(maskable.shape), _NEVER)
        order = np.argsort(keys, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(order.shape[1])[None, :], axis=1)
        return rank < budget[:, None]

    def _select_whole_words(
        self, input_ids: np.ndarray, maskable: np.ndarray, budget: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Whole-word selection with the original greedy rule, vectorised over rows.

        Words are visited in random order and taken when they fit the remaining budget. Done in
        rounds: each round takes the longest prefix (in visiting order) of still-eligible words that
        fits; the word that overflowed is skipped, and the next round continues after it with only the
        words no longer than the budget left. The budget shrinks each round, so there are few rounds.
        """
        rows, length = input_ids.shape
        previous_maskable = np.zeros_like(maskable)
        previous_maskable[:, 1:] = maskable[:, :-1]
        starts = maskable & (self._word_start[input_ids] | ~previous_maskable)
        word_of_token = np.cumsum(starts, axis=1) - 1  # word index within the row, valid where maskable
        num_words = int(starts.sum(axis=1).max(initial=0))
        if num_words == 0:
            return np.zeros_like(maskable)
        row_index = np.broadcast_to(np.arange(rows)[:, None], (rows, length))
        word_lengths = np.bincount(
            (row_index * num_words + word_of_token)[maskable], minlength=rows * num_words
        ).reshape(rows, num_words)
        keys = np.where(word_lengths > 0, rng.random((rows, num_words)), _NEVER)
        order = np.argsort(keys, axis=1, kind="stable")  # visiting order of the words
        lengths = np.take_along_axis(word_lengths, order, axis=1)
        taken = np.zeros((rows, num_words), dtype=bool)
        remaining = budget.astype(np.int64).copy()
        resume_at = np.zeros(rows, dtype=np.int64)  # the first visiting position still to consider
        column = np.arange(num_words)[None, :]
        while True:
            eligible = (column >= resume_at[:, None]) & (lengths > 0) & (lengths <= remaining[:, None])
            if not eligible.any():
                break
            cumulative = np.cumsum(np.where(eligible, lengths, 0), axis=1)
            take = eligible & (cumulative <= remaining[:, None])
            overflow = eligible & ~take
            taken |= take
            remaining -= np.where(take, lengths, 0).sum(axis=1)
            resume_at = np.where(overflow.any(axis=1), overflow.argmax(axis=1) + 1, num_words)
        taken_by_word = np.zeros_like(taken)
        np.put_along_axis(taken_by_word, order, taken, axis=1)
        return maskable & np.take_along_axis(taken_by_word, np.maximum(word_of_token, 0), axis=1)

    def corrupt(self, input_ids: np.ndarray, selected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Applies 80/10/10 to the chosen tokens.

        Args:
          input_ids: int ``[rows, S]``.
          selected: bool ``[rows, S]`` from :meth:`select`.
          rng: the random source.

        Returns:
          int32 ``[rows, S]``: a corrupted copy of ``input_ids``.
        """
        draw = rng.random(input_ids.shape)
        corrupted = np.array(input_ids, dtype=np.int32, copy=True)
        corrupted[selected & (draw < self.mask_token_prob)] = self.mask_id
        to_random = selected & (draw >= 1.0 - self.random_token_prob)
        corrupted[to_random] = self._replacement_ids[
            rng.integers(0, self._replacement_ids.size, size=int(to_random.sum()))
        ]
        return corrupted

    def mask(self, input_ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Selects and corrupts.

        Args:
          input_ids: int ``[rows, S]``.
          rng: the random source.

        Returns:
          ``(corrupted_ids, labels)``, both int32 ``[rows, S]``; ``labels`` holds the original id at
          chosen positions and :data:`NO_LABEL` elsewhere.
        """
        input_ids = np.asarray(input_ids)
        selected = self.select(input_ids, rng)
        labels = np.where(selected, input_ids, NO_LABEL).astype(np.int32)
        return self.corrupt(input_ids, selected, rng), labels

    def predictions(self, corrupted_ids: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Turns per-token labels into the contract's prediction fields.

        Rows with more than ``P`` labels (possible after packing statically masked sequences) keep
        their first ``P`` and get the original token back at the others, so no corrupted token goes
        unpredicted.

        Args:
          corrupted_ids: int ``[rows, S]`` from :meth:`mask`.
          labels: int ``[rows, S]`` from :meth:`mask`.

        Returns:
          ``input_ids`` int32 ``[rows, S]`` and ``masked_lm_positions`` / ``masked_lm_ids`` /
          ``masked_lm_weights`` int32 ``[rows, P]``, positions ascending, padded with 0.
        """
        num_predictions = self.max_predictions_per_seq
        chosen = labels != NO_LABEL
        kept = chosen & (np.cumsum(chosen, axis=1) <= num_predictions)
        dropped = chosen & ~kept
        input_ids = np.array(corrupted_ids, dtype=np.int32, copy=True)
        input_ids[dropped] = labels[dropped]
        rows, length = labels.shape
        # Kept positions first, in ascending order (stable sort on "not kept").
        order = np.argsort(~kept, axis=1, kind="stable")[:, :num_predictions]
        if length < num_predictions:
            order = np.pad(order, ((0, 0), (0, num_predictions - length)))
        valid = np.arange(num_predictions)[None, :] < kept.sum(axis=1)[:, None]
        gathered = np.take_along_axis(labels, np.minimum(order, length - 1), axis=1)
        return {
            "input_ids": input_ids,
            "masked_lm_positions": np.where(valid, order, 0).astype(np.int32),
            "masked_lm_ids": np.where(valid, gathered, 0).astype(np.int32),
            "masked_lm_weights": valid.astype(np.int32),
        }

    def __call__(self, input_ids: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Dynamic masking in one call: :meth:`mask` then :meth:`predictions`."""
        corrupted, labels = self.mask(input_ids, rng)
        return self.predictions(corrupted, labels)
