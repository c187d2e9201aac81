"""Fine-tunes BERT on a task: ``python -m launch.finetune --config=configs/finetune_glue.py:task=mrpc
--config.train.init_from=<pretraining workdir | Hugging Face dir> --workdir=workdirs/mrpc``.

Any config field can be overridden, e.g. ``--config.seeds=0,1,2`` or ``--config.train.num_epochs=2``;
``bert-jax config --config=configs/finetune_glue.py:task=mrpc`` lists every field with its comment and
default. Rerunning the same command resumes each run from its newest checkpoint. Bad input (a malformed
row, an unknown label, an answer not in its context) stops the run before training, naming the file and
line. Several processes join one run as for pretraining (``launch/pretrain.py``), each feeding its rows.
"""

from __future__ import annotations

from absl import flags

from bert_jax import entry, finetune

_CONFIG = entry.define_config("config", "configs/finetune_glue.py", "Fine-tuning config file.")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/finetune", "Directory for checkpoints, logs and predictions.")


@entry.main(config=_CONFIG, distributed=True)
def main(argv):
    entry.no_arguments(argv)
    summary = finetune.run(_CONFIG.value, _WORKDIR.value)
    entry.print_summary({"mean_std": summary["mean_std"], "workdir": _WORKDIR.value})


if __name__ == "__main__":
    main.run()
