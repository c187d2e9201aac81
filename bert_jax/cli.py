"""The ``bert-jax`` command: ``bert-jax <command> [flags]`` runs ``python -m launch.<command> [flags]``.

    bert-jax pretrain --config=configs/demo.py --workdir=workdirs/demo
    bert-jax config --config=configs/demo.py          # every config field, its comment and default
    bert-jax finetune --help

Each command is the module ``launch.<command>`` (dashes as underscores), looked up when it runs, so a
command whose module this installation lacks says so in one line (exit 2) instead of failing at import.
"""

from __future__ import annotations

import difflib
import importlib
import sys

COMMANDS = {
    "pretrain": "pretrain (or resume) a BERT model",
    "finetune": "fine-tune on a task (GLUE, SQuAD, NER, multiple choice, your TSV/JSONL)",
    "predict": "predict with a fine-tuned model on a file or stdin",
    "export-hf": "export to the Hugging Face layout (safetensors, tokenizer files)",
    "to-longformer": "turn a BERT/RoBERTa checkpoint into a Longformer (positions copied out to 4,096)",
    "fill-mask": "fill in [MASK] tokens",
    "embed": "sentence embeddings and nearest-neighbour search",
    "prepare-data": "prepare a pretraining corpus as a TFDS dataset",
    "build-vocab": "train a WordPiece or SentencePiece vocabulary",
    "aot-check": "compile the train step for a target topology and report memory",
    "sweep": "run a sweep of pretraining runs",
    "config": "print a run config: every field with its value, default and comment",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return ("usage: bert-jax <command> [flags]   (bert-jax <command> --help for its flags)\n\ncommands:\n"
            + "\n".join(lines))


def module_name(command: str) -> str:
    """``export-hf`` -> ``launch.export_hf``."""
    return "launch." + command.replace("-", "_")


def main(argv: list[str] | None = None) -> int:
    """Runs ``bert-jax`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status of usage errors."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        guess = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean {guess[0]}?" if guess else ""
        print(f"bert-jax: unknown command {command!r}{hint} (bert-jax --help lists them)", file=sys.stderr)
        return 2
    sys.argv = [f"bert-jax {command}", *rest]  # config flags read their overrides from sys.argv at import
    try:
        module = importlib.import_module(module_name(command))
    except ModuleNotFoundError as error:
        if error.name != module_name(command):
            raise
        print(f"bert-jax {command}: this installation has no {module_name(command)} module", file=sys.stderr)
        return 2
    entry_point = module.main
    if hasattr(entry_point, "run"):  # a bert_jax.entry entry point
        entry_point.run(sys.argv)
    else:
        from absl import app  # pylint: disable=g-import-not-at-top

        app.run(entry_point, argv=sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
