r"""Re-exports a Hugging Face BERT directory through bert-jax's parameter tree.

Reads ``config.json`` plus ``model.safetensors`` / sharded safetensors / ``pytorch_model.bin`` and writes
``config.json``, ``model.safetensors`` and the tokenizer files, loadable offline by ``transformers``.
Useful to convert ``pytorch_model.bin`` to safetensors and to check the import/export path end to end::

  python -m launch.export_hf --init_from=/path/to/hf_bert --out_dir=/tmp/bert_export

Exporting our own training checkpoints (Orbax) comes with ``bert_jax/checkpoint.py``.
"""

from absl import flags

from bert_jax import entry, hf

_INIT_FROM = flags.DEFINE_string("init_from", None, "Hugging Face BERT directory to read.", required=True)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Directory to write (created if needed).", required=True)
_VOCAB = flags.DEFINE_string(
    "vocab", None, "WordPiece vocab.txt or a tokenizer directory; default: --init_from when it holds vocab.txt.")
_LOWERCASE = flags.DEFINE_boolean(
    "lowercase", None, "Tokenizer do_lower_case; default: the vocab directory's tokenizer_config.json, else true.")


@entry.main()
def main(argv: list[str]) -> None:
    entry.no_arguments(argv)
    hf.convert_hf_directory(_INIT_FROM.value, _OUT_DIR.value, vocab_file=_VOCAB.value, lowercase=_LOWERCASE.value)


if __name__ == "__main__":
    main.run()
