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
import time
from collections.abc import Mapping
from typing import Any

from etils import epath

from bert_jax import fileio

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


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


class Progress:
    """A tqdm bar showing step, loss, tokens/s, MFU, the ETA and the last evaluation's loss and accuracies."""

    def __init__(self, total_steps: int, initial_step: int, *, enabled: bool = True):
        self._bar, self._fields, self._eval = None, {}, {}
        if enabled:
            from tqdm import tqdm  # pylint: disable=g-import-not-at-top

            self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                             mininterval=1.0, smoothing=0.1)
        self._last_step, self._last_time = initial_step, time.perf_counter()

    def update(self, step: int, **fields: float) -> None:
        if self._bar is None:
            return
        self._bar.update(step - self._last_step)
        self._last_step = step
        self._fields = fields
        self._show(refresh=False)

    def set_eval(self, metrics: Mapping[str, float]) -> None:
        """Shows ``metrics``' loss and accuracies (``eval_loss``, ``eval_mlm_accuracy``, ...) from now on."""
        self._eval = {f"eval_{k}": v for k, v in metrics.items() if k == "loss" or k.endswith("accuracy")}
        if self._bar is not None:
            self._show(refresh=True)

    def _show(self, refresh: bool) -> None:
        shown = {}
        for name, value in {**self._fields, **self._eval}.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            shown[name] = f"{value:.3g}" if name != "mfu" else f"{100 * value:.1f}%"
        self._bar.set_postfix(shown, refresh=refresh)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def plot_curves(workdir: str, out_name: str = CURVES_FILE) -> str | None:
    """Draws the training and eval curves of ``metrics.jsonl`` into a PNG; returns its path."""
    records = latest_records(read_metrics(workdir))
    if not records:
        return None
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    panels = [("loss", "loss"), ("mlm_accuracy", "MLM accuracy"), ("nsp_accuracy", "NSP accuracy")]
    panels = [(k, t) for k, t in panels if any(k in r for r in records)] or [
        (k, k) for k in sorted({k for r in records for k in r} - {"step", "split"})[:3]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for split in sorted({r["split"] for r in records}):
            points = [(r["step"], r[key]) for r in records if r["split"] == split and key in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if split != "train" else None, label=split)
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
