r"""Turns a short-context BERT / RoBERTa checkpoint into a Longformer (positions copied out to 4,096).

``--init_from`` is a Hugging Face BERT or RoBERTa directory or a workdir of ours; the result is a
Hugging Face ``LongformerForMaskedLM`` directory (``bert_jax/interop/to_longformer.py`` says how the
weights are made), which ``transformers`` loads and which ``--init_from`` / ``train.init_from`` accept::

  python -m launch.to_longformer --init_from=workdirs/bert-base --out=/tmp/longformer-base \
      --max_positions=4096 --attention_window=512
  bert-jax to-longformer --init_from=/path/to/roberta-base --out=/tmp/longformer-base
"""

from absl import app, flags

from bert_jax import entry
from bert_jax.interop import to_longformer

_INIT_FROM = flags.DEFINE_string("init_from", None, "Hugging Face BERT/RoBERTa directory or a workdir of ours.",
                                 required=True)
_OUT = flags.DEFINE_string("out", None, "Directory to write (created if needed).")
_MAX_POSITIONS = flags.DEFINE_integer("max_positions", to_longformer.LONGFORMER_POSITIONS,
                                      "Tokens the Longformer takes (the paper: 4096).")
_WINDOW = flags.DEFINE_list("attention_window", ["512"], "Local window (even), one for all layers or one per layer.")
_PAD = flags.DEFINE_integer("pad_token_id", None, "Padding id (default: the source's).")


@entry.main()
def main(argv: list[str]) -> None:
    entry.no_arguments(argv)
    if not _OUT.value:
        raise app.UsageError("--out is required: the directory to write")
    windows = tuple(int(w) for w in _WINDOW.value)
    print(to_longformer.convert(_INIT_FROM.value, _OUT.value, max_positions=_MAX_POSITIONS.value,
                                attention_window=windows, pad_token_id=_PAD.value))


if __name__ == "__main__":
    main.run()
