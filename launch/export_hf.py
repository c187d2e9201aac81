r"""Exports a run to a Hugging Face directory that ``transformers`` loads offline with none of our code.

``--init_from`` is a pretraining or fine-tuning workdir (one run), one of its ``checkpoints/<step>``
dirs, or a Hugging Face BERT directory (re-exported through our parameter tree, e.g. to turn a
``pytorch_model.bin`` into ``model.safetensors``). The architecture follows the run: ``BertForPreTraining``
/ ``BertForMaskedLM`` for pretraining, the matching ``BertFor...`` class for each fine-tuning task::

  python -m launch.export_hf --init_from=workdirs/demo --out=/tmp/demo_hf

Writes ``config.json``, ``model.safetensors``, the tokenizer files and a model card ``README.md``.
"""

from absl import app, flags

from bert_jax import entry
from bert_jax.interop import export

_INIT_FROM = flags.DEFINE_string("init_from", None, "Workdir, checkpoint dir or Hugging Face directory.",
                                 required=True)
_OUT = flags.DEFINE_string("out", None, "Directory to write (created if needed).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "The same as --out (older spelling).")
_LABEL_NAMES = flags.DEFINE_list(
    "label_names", None, "Class names in id order, for a classification/tagging run whose training file is gone.")


@entry.main()
def main(argv: list[str]) -> None:
    entry.no_arguments(argv)
    out = _OUT.value or _OUT_DIR.value
    if not out:
        raise app.UsageError("--out is required: the directory to write")
    print(export.export_run(_INIT_FROM.value, out, label_names=_LABEL_NAMES.value))


if __name__ == "__main__":
    main.run()
