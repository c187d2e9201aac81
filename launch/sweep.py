"""Runs a sweep: ``python -m launch.sweep --sweep=configs/sweeps/ablations.py --root=gs://BUCKET/ablations``.

Each run of the sweep file's ``get_sweep()`` trains with ``launch.pretrain`` in ``<root>/<name>``, one after
another; a rerun skips finished runs and resumes unfinished ones. ``--dry_run`` prints the commands.
At the end ``<root>/sweep_summary.md`` and ``.csv`` tabulate every run's final metrics
(``bert_jax/sweep.py``). ``--set=train.num_steps=100`` (repeatable) overrides a field in every run.
"""

from __future__ import annotations

import shlex
import sys

from absl import flags

from bert_jax import config_fields, entry, sweep

_SWEEP = flags.DEFINE_string("sweep", "configs/sweeps/ablations.py", "Sweep file (get_sweep()).")
_ROOT = flags.DEFINE_string("root", "workdirs/sweep", "Directory holding one workdir per run (local or gs://).")
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the runs' commands instead of running them.")
_ONLY = flags.DEFINE_list("only", [], "Run only these run names (default: all).")
_SET = flags.DEFINE_multi_string("set", [], "FIELD=VALUE override applied to every run (repeatable).")
_RERUN = flags.DEFINE_boolean("rerun", False, "Also relaunch runs whose final_metrics.json says they finished.")
_PYTHON = flags.DEFINE_string("python", sys.executable, "Python interpreter that runs launch.pretrain.")


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    sweep_file = config_fields.resolve_config_path(_SWEEP.value)  # a packaged sweep from any directory
    runs = sweep.select(sweep.expand(sweep.with_overrides(sweep.load_sweep(sweep_file), _SET.value), _ROOT.value),
                        _ONLY.value)
    if _DRY_RUN.value:
        for run in runs:
            print(shlex.join(run.command(_PYTHON.value)))
        return
    statuses = sweep.run_sweep(runs, sweep.subprocess_runner(_PYTHON.value), rerun_finished=_RERUN.value)
    for path in sweep.write_summary(runs, _ROOT.value, statuses):
        print(path)
    print(sweep.markdown_table(sweep.summary_rows(runs, statuses)))
    if any(statuses.values()):
        sys.exit(1)


if __name__ == "__main__":
    main.run()
