"""Compiles a run's train step for a target topology without its hardware and reports memory per device.

    python -m launch.aot_check --config=configs/pretrain.py:size=large,phase=2 --target=v4-32 \
        --config.sharding.mesh.data=1 --config.sharding.mesh.fsdp=-1
    python -m launch.aot_check --config=configs/pretrain.py:size=base --target=cpu:8 --hbm_gib=80

Targets: ``cpu:N`` (simulated devices: sharding errors; CPU compiler's memory figures) or a Cloud TPU
accelerator type (``v4-32``, ``v5e-16``, ``v5p-64``, ``v6e-16``; needs ``pip install libtpu==0.0.42``, no
TPU). Exit status: 0 fits (or no HBM size to compare with), 1 does not fit, 2 does not compile.
``bert_jax/aot.py`` and ``docs/scaling.md`` say what the check can and cannot catch.
"""

from __future__ import annotations

import dataclasses
import json

from absl import flags

from bert_jax import aot, entry

_CONFIG = entry.define_config("config", "configs/pretrain.py", "Run config file (get_config()).")
_TARGET = flags.DEFINE_string("target", "cpu:8", "cpu:N, a TPU accelerator type (v4-32, v5e-16, ...) or tpu:v4:2x2x4.")
_HBM_GIB = flags.DEFINE_float("hbm_gib", None, "Memory per device in GiB (default: the TPU generation's HBM).")
_OUT = flags.DEFINE_string("out", None, "Also write the report as JSON to this file.")


@entry.main(failure="AOT check failed")
def main(argv):
    entry.no_arguments(argv)
    report = aot.check(_CONFIG.value, _TARGET.value, hbm_gib=_HBM_GIB.value)  # AotError: one line, exit 2
    print(aot.format_report(report))
    if _OUT.value:
        with open(_OUT.value, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(report) | {"fits": report.fits, "peak_bytes": report.memory.peak}, f, indent=2)
    return 1 if report.fits is False else 0


if __name__ == "__main__":
    main.run()
