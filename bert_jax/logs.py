"""Run logging: ``metrics.jsonl``, TensorBoard events (tensorboardX, no TensorFlow), a progress bar and a
PNG of the curves. Only the primary process writes files; every process may show the bar.

Workdirs may be local or remote (``gs://bucket/run``): files go through ``etils.epath`` (remote paths
need ``gcsfs``; TensorBoard events on ``gs://`` need ``google-cloud-storage``, see docs/scaling.md).
Object stores cannot append, so a remote ``metrics.jsonl`` is rewritten whole on each record.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from typing import Any

from etils import epath

from bert_jax import fileio

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion_matrix.png"


def _scalar(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class _QuietLibraries(logging.Filter):
    """Drops INFO records from chatty libraries (Orbax, Grain, absl internals), keeping warnings."""

    NOISY = ("/orbax/", "/grain/", "/jax/_src/", "/tensorflow_datasets/")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(p in record.pathname for p in self.NOISY)


def setup_logging() -> None:
    """INFO logs from bert-jax and data_pipelines; warnings and errors only from the libraries."""
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

    absl_logging.set_verbosity(absl_logging.INFO)
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())


class MetricWriter:
    """Appends ``{"step", "split", **scalars}`` lines to ``metrics.jsonl`` and mirrors them to TensorBoard."""

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._path = epath.Path(workdir) / METRICS_FILE
        self._remote_text = None  # a remote file's whole content (rewritten on each record)
        self._tb = None
        if enabled:
            epath.Path(workdir).mkdir(parents=True, exist_ok=True)
            if fileio.is_remote(workdir):
                self._remote_text = self._path.read_text(encoding="utf-8") if self._path.exists() else ""
            if tensorboard:
                from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

                self._tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

    def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> dict[str, float]:
        """Writes one record; returns the scalars as floats."""
        values = {k: _scalar(v) for k, v in scalars.items()}
        if not self.enabled:
            return values
        line = json.dumps({"step": int(step), "split": split, **values}) + "\n"
        if self._remote_text is None:
            with self._path.open("a", encoding="utf-8") as f:
                f.write(line)
        else:
            self._remote_text += line
            self._path.write_text(self._remote_text, encoding="utf-8")
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(f"{split}/{name}", value, int(step))
            self._tb.flush()
        return values

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl`` back; a truncated last line (a killed run) is ignored."""
    path = epath.Path(workdir) / METRICS_FILE
    records = []
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def latest_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per ``(step, split)``, the last one written winning, in step order.

    A resumed run logs the steps after its checkpoint again (those a killed run had already logged);
    the later records are the ones the run continued from.
    """
    latest = {(record["step"], record["split"]): record for record in records}
    return [latest[key] for key in sorted(latest)]


# Held-out metrics worth a place on the progress bar, the curves and the one-line results, best first.
HEADLINE_METRICS = ("accuracy", "f1", "exact_match", "matthews_corr", "pearson", "spearman", "mlm_accuracy",
                    "nsp_accuracy", "mse")


def headline_metrics(metrics: Mapping[str, Any], limit: int = 2) -> dict[str, float]:
    """The first ``limit`` eval figures (``[split/]name``) whose name is in :data:`HEADLINE_METRICS`."""
    def rank(key: str) -> int:
        name = key.rsplit("/", 1)[-1]
        return HEADLINE_METRICS.index(name) if name in HEADLINE_METRICS else len(HEADLINE_METRICS)

    keys = sorted((k for k in metrics if rank(k) < len(HEADLINE_METRICS)), key=lambda k: (rank(k), k))
    return {k: _scalar(metrics[k]) for k in keys[:limit]}


def format_metrics(metrics_by_split: Mapping[str, Mapping[str, Any]], limit: int = 4) -> str:
    """``"validation accuracy=0.825 f1=0.81"``: the headline figures of each split on one line."""
    parts = []
    for split, values in metrics_by_split.items():
        shown = headline_metrics(values, limit)
        parts.append(f"{split} " + " ".join(f"{k}={v:.4g}" for k, v in shown.items()) if shown else split)
    return "; ".join(parts) or "no metrics (test splits only)"


def report(line: str) -> None:
    """Prints a result line to stderr without breaking a progress bar, and logs it."""
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top

    tqdm.write(line, file=sys.stderr)
    logging.info("%s", line)


class Progress:
    """A tqdm bar showing step, loss, tokens/s, MFU, the latest eval figures and the ETA."""

    def __init__(self, total_steps: int, initial_step: int, *, enabled: bool = True, label: str | None = None):
        self._bar = None
        if enabled:
            from tqdm import tqdm  # pylint: disable=g-import-not-at-top

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                             mininterval=1.0, smoothing=0.1, desc=label)
        self._last_step, self._last_time = initial_step, time.perf_counter()
        self._train: dict[str, str] = {}
        self._eval: dict[str, str] = {}

    @staticmethod
    def _shown(fields: Mapping[str, Any]) -> dict[str, str]:
        shown = {}
        for name, value in fields.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            shown[name] = f"{value:.3g}" if name != "mfu" else f"{100 * value:.1f}%"
        return shown

    def update(self, step: int, **fields: float) -> None:
        if self._bar is None:
            return
        self._bar.update(step - self._last_step)
        self._last_step = step
        self._train = self._shown(fields)
        self._bar.set_postfix({**self._train, **self._eval}, refresh=False)

    def show_eval(self, metrics: Mapping[str, Any]) -> None:
        """Adds the headline figures of an evaluation (``headline_metrics``) to the bar."""
        if self._bar is None:
            return
        self._eval = self._shown({f"eval/{k}" if "/" not in k else k: v for k, v in headline_metrics(metrics).items()})
        self._bar.set_postfix({**self._train, **self._eval}, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def curve_panels(records: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """``(title, [(line label, split, key)])`` per panel: the loss (training and held-out), then the
    held-out metrics. Fine-tuning evals are keyed ``<split>/<metric>`` (several eval splits);
    pretraining evals share the training keys (``mlm_accuracy``)."""
    keys = {split: set().union(*(r for r in records if r["split"] == split)) - {"step", "split"}
            for split in {r["split"] for r in records}}
    train, held_out = keys.get("train", set()), keys.get("eval", set())
    loss_lines = [("train", "train", "loss")] if "loss" in train else []
    loss_lines += [(k.removesuffix("/loss") if "/" in k else "eval", "eval", k)
                   for k in sorted(held_out) if k == "loss" or k.endswith("/loss")]
    panels = [("loss", loss_lines)] if loss_lines else []
    metric_names = [n for n in HEADLINE_METRICS if any(k.rsplit("/", 1)[-1] == n for k in held_out | train)][:2]
    for name in metric_names:
        lines = [("train", "train", name)] if name in train else []
        lines += [(k.rsplit("/", 1)[0] if "/" in k else "eval", "eval", k)
                  for k in sorted(held_out) if k.rsplit("/", 1)[-1] == name]
        per_split = any("/" in key for _, _, key in lines)
        panels.append((f"held-out {name}" if per_split else name, lines))
    if not panels:  # records without a known metric: the first three there are
        panels = [(k, [(split, split, k) for split in sorted(keys)]) for k in sorted(set().union(*keys.values()))[:3]]
    return panels


def plot_curves(workdir: str, out_name: str = CURVES_FILE) -> str | None:
    """Draws the curves of ``metrics.jsonl`` into a PNG: training and held-out loss, then the held-out
    metrics (accuracy, F1, EM, ...; one line per eval split); returns its path."""
    records = latest_records(read_metrics(workdir))
    if not records:
        return None
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    panels = curve_panels(records)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels):
        for line_label, split, key in lines:
            points = [(r["step"], r[key]) for r in records if r["split"] == split and key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if split != "train" else None, label=line_label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    path = epath.Path(workdir) / out_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png.getvalue())
    return str(path)


def plot_confusion_matrix(matrix, class_names, path: str, title: str = "") -> str:
    """Draws a confusion matrix (int ``[C, C]``, row = true class, column = predicted) as a PNG at ``path``.

    Each cell shows its count; the colour is the share of its row (the true class's recall), so classes
    of different sizes read alike. Returns ``path``.
    """
    import matplotlib  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.9 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(matrix):
        ax.text(column, row, str(int(count)), ha="center", va="center",
                color="white" if shares[row, column] > 0.5 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"{int(np.trace(matrix))} of {int(matrix.sum())} correct")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    out = epath.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png.getvalue())
    return str(out)
