"""Sweeps: a sweep file expands into runs with their own workdirs, run one after another, then summarised.

A sweep file is Python with ``get_sweep()`` returning a list of run specs: dicts of config overrides
(``"optimizer.learning_rate": 2e-4``) plus two optional keys, ``"config"`` (the config file and its
variant, ``"configs/pretrain.py:size=base,ablation=wwm"``) and ``"name"``. Build them with
``grid`` (every combination), ``zipped`` (values side by side) and ``product`` (combinations of
those lists)::

    def get_sweep():
        return sweep.product(
            sweep.grid({"config": ["configs/demo.py"], "train.seed": [0, 1]}),
            sweep.zipped({"optimizer.learning_rate": [1e-3, 3e-4], "optimizer.warmup_steps": [100, 300]}))

``expand`` gives each run a name from the values that differ between runs (``seed=1_learning_rate=0.0003``)
and the workdir ``<root>/<name>``; ``run_sweep`` launches each as
``python -m launch.pretrain --config=... --workdir=... --config.<field>=<value> ...`` (so a rerun of the
sweep resumes unfinished runs from their checkpoints and skips finished ones), and
``write_summary`` tabulates every run's ``final_metrics.json`` into ``<root>/sweep_summary.md`` and
``.csv``. Workdirs may be ``gs://`` paths (read and written through ``etils.epath``).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import itertools
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from etils import epath

CONFIG_KEY = "config"
NAME_KEY = "name"
DEFAULT_CONFIG = "configs/pretrain.py"
SUMMARY_FILE = "final_metrics.json"  # bert_jax.train.FINAL_SUMMARY_FILE (not imported: no JAX here)
SUMMARY_TABLE = "sweep_summary"
RunSpec = dict[str, Any]


class SweepError(ValueError):
    """A malformed sweep file or run spec (the message names the run and the field)."""


# --- building sweeps ------------------------------------------------------------------------------

def grid(axes: Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    """Every combination of the axes' values, first axis slowest: ``{"a": [1, 2], "b": [3]}`` -> 2 runs."""
    keys = list(axes)
    for key in keys:
        if isinstance(axes[key], (str, bytes)) or not isinstance(axes[key], Sequence):
            raise SweepError(f"sweep axis {key!r}: expected a list of values, got {axes[key]!r}")
    return [dict(zip(keys, values)) for values in itertools.product(*(axes[key] for key in keys))]


def zipped(axes: Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    """The axes' values side by side (equal lengths): ``{"a": [1, 2], "b": [3, 4]}`` -> a=1,b=3; a=2,b=4."""
    lengths = {key: len(values) for key, values in axes.items()}
    if len(set(lengths.values())) > 1:
        raise SweepError(f"zipped axes have different lengths: {lengths}")
    keys = list(axes)
    return [dict(zip(keys, values)) for values in zip(*(axes[key] for key in keys))]


def product(*parts: Sequence[RunSpec] | Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    """Combinations of run-spec lists (a mapping counts as its ``grid``), later parts varying fastest.

    Raises:
      SweepError: two parts set the same field with different values.
    """
    lists = [grid(part) if isinstance(part, Mapping) else list(part) for part in parts]
    runs = []
    for combination in itertools.product(*lists):
        merged: RunSpec = {}
        for spec in combination:
            for key, value in spec.items():
                if key in merged and merged[key] != value:
                    raise SweepError(f"sweep parts disagree on {key!r}: {merged[key]!r} vs {value!r}")
                merged[key] = value
        runs.append(merged)
    return runs


# --- expanding into runs --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep.

    Attributes:
      name: unique within the sweep; the workdir's last component.
      config: config file with optional variant, ``path[:arg]``.
      overrides: dotted config field -> value, passed as ``--config.<field>=<value>``.
      workdir: ``<root>/<name>``.
    """

    name: str
    config: str
    overrides: dict[str, Any]
    workdir: str

    def command(self, python: str = sys.executable) -> list[str]:
        """The ``launch.pretrain`` command line of this run."""
        return [python, "-m", "launch.pretrain", f"--config={self.config}", f"--workdir={self.workdir}",
                *(f"--config.{field}={format_value(value)}" for field, value in self.overrides.items())]


def format_value(value: Any) -> str:
    """A config value as ``ml_collections.config_flags`` parses it back (strings as they are)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _name_items(spec: RunSpec) -> list[tuple[str, str]]:
    """``(label, value)`` pairs a run name is made of: variant items of the config arg, then fields."""
    items = []
    path, _, arg = str(spec.get(CONFIG_KEY, DEFAULT_CONFIG)).partition(":")
    items.append(("config", path.rsplit("/", 1)[-1].removesuffix(".py")))
    for item in filter(None, arg.split(",")):
        key, _, value = item.partition("=")
        items.append((key, value))
    items.extend((key.rsplit(".", 1)[-1], format_value(value))
                 for key, value in spec.items() if key not in (CONFIG_KEY, NAME_KEY))
    return items


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-")


def expand(specs: Iterable[RunSpec], root: str, default_config: str = DEFAULT_CONFIG) -> list[Run]:
    """Turns run specs into named runs under ``root``.

    A run without ``"name"`` is named after the items (config variant items and override values)
    that are not the same in every run, ``key=value`` joined by ``_``.

    Raises:
      SweepError: no runs, a non-string override key, or two runs with the same name.
    """
    specs = [dict(spec) for spec in specs]
    if not specs:
        raise SweepError("the sweep has no runs")
    for index, spec in enumerate(specs):
        bad = [key for key in spec if not isinstance(key, str) or not key]
        if bad:
            raise SweepError(f"run {index} of the sweep: override keys must be dotted field names, got {bad}")
        spec.setdefault(CONFIG_KEY, default_config)
    item_lists = [_name_items(spec) for spec in specs]
    shared = set.intersection(*(set(items) for items in item_lists))
    runs = []
    for spec, items in zip(specs, item_lists):
        name = spec.get(NAME_KEY) or "_".join(f"{k}={v}" for k, v in items if (k, v) not in shared) or "run"
        overrides = {k: v for k, v in spec.items() if k not in (CONFIG_KEY, NAME_KEY)}
        runs.append(Run(_safe(name), spec[CONFIG_KEY], overrides, str(epath.Path(root) / _safe(name))))
    names = [run.name for run in runs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SweepError(f"runs share the names {duplicates}; give them distinct 'name' keys")
    return runs


def with_overrides(specs: Iterable[RunSpec], assignments: Iterable[str]) -> list[RunSpec]:
    """Adds ``FIELD=VALUE`` overrides (command-line strings) to every spec; they win over the spec's.

    Raises:
      SweepError: an assignment without ``=``.
    """
    extra = {}
    for assignment in assignments:
        field, sep, value = assignment.partition("=")
        if not sep or not field:
            raise SweepError(f"override {assignment!r}: expected FIELD=VALUE, e.g. train.num_steps=100")
        extra[field] = value
    return [{**spec, **extra} for spec in specs]


def select(runs: Sequence[Run], names: Sequence[str]) -> list[Run]:
    """The runs named in ``names`` (all runs when empty), in sweep order.

    Raises:
      SweepError: a name that is not a run of the sweep.
    """
    unknown = sorted(set(names) - {run.name for run in runs})
    if unknown:
        raise SweepError(f"no runs named {unknown}; the sweep's runs are {[run.name for run in runs]}")
    return [run for run in runs if not names or run.name in names]


def load_sweep(path: str) -> list[RunSpec]:
    """Calls ``get_sweep()`` of the sweep file at ``path``.

    Raises:
      SweepError: the file has no ``get_sweep`` or it does not return a list of dicts.
    """
    module_spec = importlib.util.spec_from_file_location(f"sweep_{_safe(path)}", path)
    if module_spec is None or module_spec.loader is None:
        raise SweepError(f"sweep file {path} cannot be loaded (not a .py file?)")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"sweep file {path} defines no get_sweep()")
    specs = module.get_sweep()
    if not isinstance(specs, list) or not all(isinstance(spec, Mapping) for spec in specs):
        raise SweepError(f"{path}: get_sweep() must return a list of dicts, got {type(specs).__name__}")
    return specs


# --- running and summarising ----------------------------------------------------------------------

Runner = Callable[[Run], int]  # runs one run to the end; returns its exit status


def subprocess_runner(python: str = sys.executable) -> Runner:
    """Runs ``run.command(python)`` in a child process (output goes to this process's stdout/stderr)."""

    def run_one(run: Run) -> int:
        return subprocess.run(run.command(python), check=False).returncode

    return run_one


def read_final_metrics(run: Run) -> dict[str, Any] | None:
    """The run's ``final_metrics.json``, or None when it has not finished once."""
    path = epath.Path(run.workdir) / SUMMARY_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def run_sweep(runs: Sequence[Run], runner: Runner, *, rerun_finished: bool = False) -> dict[str, int | None]:
    """Runs each run in order, skipping finished ones; a failed run does not stop the others.

    Args:
      runs: from ``expand``.
      runner: runs one run and returns its exit status (``subprocess_runner()``).
      rerun_finished: also launch runs whose ``final_metrics.json`` says they finished.

    Returns:
      run name -> exit status (None for a skipped, already finished run).
    """
    statuses: dict[str, int | None] = {}
    for index, run in enumerate(runs, 1):
        previous = read_final_metrics(run)
        if previous is not None and not previous.get("preempted") and not rerun_finished:
            logging.info("[%d/%d] %s already finished at step %s: skipped", index, len(runs), run.name,
                         previous.get("step"))
            statuses[run.name] = None
            continue
        logging.info("[%d/%d] %s: %s", index, len(runs), run.name, " ".join(run.command()))
        statuses[run.name] = runner(run)
        if statuses[run.name]:
            logging.error("run %s failed with exit status %d", run.name, statuses[run.name])
    return statuses


def summary_rows(runs: Sequence[Run], statuses: Mapping[str, int | None] | None = None) -> list[dict[str, Any]]:
    """One row per run: name, status, the overrides that vary, step and final eval metrics."""
    statuses = statuses or {}
    varying = sorted({key for run in runs for key in run.overrides
                      if len({format_value(r.overrides.get(key, "")) for r in runs}) > 1})
    varying_config = len({run.config for run in runs}) > 1
    rows = []
    for run in runs:
        final = read_final_metrics(run)
        status = statuses.get(run.name)
        if final is None:
            state = "missing" if status is None else f"failed ({status})"
        else:
            state = "preempted" if final.get("preempted") else ("done" if not status else f"failed ({status})")
        row: dict[str, Any] = {"run": run.name, "status": state}
        if varying_config:
            row["config"] = run.config
        row.update({key: run.overrides.get(key, "") for key in varying})
        if final is not None:
            row["step"] = final.get("step")
            row.update({f"eval_{k}": v for k, v in sorted((final.get("eval") or {}).items())})
            if "unigram_baseline_mlm_accuracy" in final:
                row["unigram_baseline_mlm_accuracy"] = final["unigram_baseline_mlm_accuracy"]
        rows.append(row)
    return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (union of their keys as columns)."""
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as CSV text (full precision)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_summary(runs: Sequence[Run], root: str, statuses: Mapping[str, int | None] | None = None) -> list[str]:
    """Writes ``<root>/sweep_summary.md`` and ``.csv``; returns their paths."""
    rows = summary_rows(runs, statuses)
    root_path = epath.Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".md", markdown_table(rows)), (".csv", csv_table(rows))):
        path = root_path / f"{SUMMARY_TABLE}{suffix}"
        path.write_text(text)
        paths.append(str(path))
    return paths
