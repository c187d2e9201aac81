"""Fills in ``[MASK]`` tokens with a model that has a masked-LM head.

    python -m launch.fill_mask --init_from=DIR --text="Paris is the [MASK] of France."

``DIR`` is a Hugging Face / exported directory or a pretraining workdir. Prints, for every ``[MASK]``,
the ``--top_k`` most probable tokens with their probabilities (and ``--json`` for machine reading).
"""

from __future__ import annotations

import json
from absl import flags

from bert_jax import entry, inference

_INIT_FROM = flags.DEFINE_string("init_from", None, "Model directory (Hugging Face or a workdir).", required=True)
_TEXT = flags.DEFINE_multi_string("text", None, "Text with [MASK] tokens (repeat the flag for more).", required=True)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Candidates per [MASK].")
_JSON = flags.DEFINE_boolean("json", False, "Print JSON instead of lines.")


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    results = inference.fill_mask(inference.load_model(_INIT_FROM.value), _TEXT.value, _TOP_K.value)
    if _JSON.value:
        print(json.dumps([{"text": t, "masks": r} for t, r in zip(_TEXT.value, results)], indent=2))
        return
    for text, masks in zip(_TEXT.value, results):
        print(text)
        for number, candidates in enumerate(masks, start=1):
            print(f"  [MASK] #{number}: " + ", ".join(f"{c['token']} ({c['score']:.3f})" for c in candidates))


if __name__ == "__main__":
    main.run()
