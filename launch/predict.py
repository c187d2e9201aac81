"""Predicts with a fine-tuned run: ``python -m launch.predict --init_from=workdirs/mrpc --input=pairs.tsv``.

Input: JSON lines or tab-separated lines (a file, or ``-`` for stdin; columns per task kind in
``bert_jax/predict.py``). Output: one JSON object per example (labels with probabilities, scores, SQuAD
answers, NER tags per word, multiple-choice picks) to ``--output`` (default stdout); a progress bar on
stderr. Bad input stops with one line naming the file, line and field.
"""

from __future__ import annotations

from absl import flags

from bert_jax import entry, predict

_INIT_FROM = flags.DEFINE_string("init_from", None, "Fine-tuned run (workdir or checkpoints/<step>) or fine-tuned "
                                  "Hugging Face directory.", required=True)
_INPUT = flags.DEFINE_string("input", "-", "JSONL or TSV file of examples; '-' = stdin.")
_OUTPUT = flags.DEFINE_string("output", "-", "Where the JSON-lines predictions go; '-' = stdout.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Rows per batch (rounded up to a multiple of the devices).")
_MAX_SEQ = flags.DEFINE_integer("max_seq_length", None, "Row length for a Hugging Face directory (default 128).")
_FORMAT = flags.DEFINE_enum("input_format", None, list(predict.FORMATS), "Input format; default: guessed.")


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    records = predict.predict(_INIT_FROM.value, _INPUT.value, batch_size=_BATCH_SIZE.value,
                              input_format=_FORMAT.value, max_seq_length=_MAX_SEQ.value)  # bad input or run: one line naming it, exit 2
    predict.write_records(records, _OUTPUT.value)


if __name__ == "__main__":
    main.run()
