"""Pretrains BERT: ``python -m launch.pretrain --config=configs/demo.py --workdir=workdirs/demo``.

Any config field can be overridden, e.g. ``--config.train.num_steps=100``; ``bert-jax config
--config=configs/demo.py`` lists every field with its comment and default. Rerunning the same command
resumes from the newest checkpoint in the workdir. SIGTERM (preemption) saves a checkpoint and exits 0.

Several processes (hosts, or GPUs of one host) join one run through ``bert_jax.distributed``: detected
on Cloud TPU VMs, under SLURM and Open MPI, or given with ``--coordinator_address=HOST:PORT
--num_processes=N --process_id=I``; ``docs/scaling.md`` and the ``launch/*.sh`` scripts show how.
"""

from __future__ import annotations

from absl import flags

from bert_jax import entry, train

_CONFIG = entry.define_config("config", "configs/demo.py", "Run config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "Directory for checkpoints, logs and plots.")


@entry.main(config=_CONFIG, distributed=True)
def main(argv):
    entry.no_arguments(argv)
    entry.print_summary(train.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
    main.run()
