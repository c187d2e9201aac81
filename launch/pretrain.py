"""Pretrains BERT: ``python -m launch.pretrain --config=configs/demo.py --workdir=workdirs/demo``.

Any config field can be overridden, e.g. ``--config.train.num_steps=100``. Rerunning the same command
resumes from the newest checkpoint in the workdir. SIGTERM (preemption) saves a checkpoint and exits 0.

Several processes (hosts, or GPUs of one host) join one run through ``bert_jax.distributed``: detected
on Cloud TPU VMs, under SLURM and Open MPI, or given with ``--coordinator_address=HOST:PORT
--num_processes=N --process_id=I``; ``docs/scaling.md`` and the ``launch/*.sh`` scripts show how.
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from bert_jax import distributed, logs, perf, train

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Run config file (get_config()).")
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "Directory for checkpoints, logs and plots.")


def main(argv):
    del argv
    logs.setup_logging()
    perf.apply_host_heap(_CONFIG.value.train.get("host_heap", "auto"))  # Before JAX starts its threads.
    distributed.initialize_from_flags()  # Before anything touches a device.
    summary = train.run(_CONFIG.value, _WORKDIR.value)
    if distributed.is_primary():
        print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    app.run(main)
