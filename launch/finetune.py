"""Fine-tunes BERT on a task: ``python -m launch.finetune --config=configs/finetune_glue.py:task=mrpc
--config.train.init_from=<pretraining workdir | Hugging Face dir> --workdir=workdirs/mrpc``.

Any config field can be overridden, e.g. ``--config.seeds=0,1,2`` or ``--config.train.num_epochs=2``.
Rerunning the same command resumes each run from its newest checkpoint. Bad input (a malformed row, an
unknown label, an answer not in its context) stops the run before training, naming the file and line.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from bert_jax import finetune, logs, perf

_CONFIG = config_flags.DEFINE_config_file("config", "configs/finetune_glue.py", "Fine-tuning config file.")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/finetune", "Directory for checkpoints, logs and predictions.")


def main(argv):
    del argv
    logs.setup_logging()
    perf.apply_host_heap(_CONFIG.value.train.get("host_heap", "auto"))  # Before JAX starts its threads.
    try:
        summary = finetune.run(_CONFIG.value, _WORKDIR.value)
    except finetune.InputError as error:  # bad input or config: say what and where, no traceback
        sys.exit(f"fine-tuning stopped before training: {error}")
    print(json.dumps({"mean_std": summary["mean_std"], "workdir": _WORKDIR.value}, indent=2))


if __name__ == "__main__":
    app.run(main)
