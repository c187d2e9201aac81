"""Prints a run config field by field: its value, its default and the comment where it is defined.

    python -m launch.config --config=configs/demo.py
    python -m launch.config --config=configs/finetune_glue.py:task=mrpc --config.train.num_epochs=2

(``bert-jax config ...`` is the same.) Each line reads ``field = value  (default D)  # comment``: the
value with the ``--config.*`` overrides applied, ``D`` the value where the field is defined when the file
or an override changed it. Every field can be overridden with ``--config.<field>=<value>``.
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from bert_jax import config_fields, entry

_CONFIG = entry.define_config("config", "configs/pretrain.py", "Run config file (get_config()).")


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    print(config_fields.describe(config_flags.get_config_filename(flags.FLAGS["config"]), _CONFIG.value))


if __name__ == "__main__":
    main.run()
