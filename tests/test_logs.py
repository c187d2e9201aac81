"""The run's progress bar (bert_jax/logs.py ``Progress``): training figures and the last evaluation's."""

from __future__ import annotations

from bert_jax import logs


def test_progress_bar_shows_the_last_eval_figures(capsys):
    progress = logs.Progress(10, 0)
    progress.update(5, loss=7.25, tok_s=1234.0, mfu=0.123)
    progress.show_eval({"loss": 6.5, "mlm_accuracy": 0.128, "nsp_accuracy": 0.54, "mlm_loss": 6.0})
    progress.update(10, loss=6.75, tok_s=1300.0, mfu=float("nan"))
    progress.close()
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "10/10" in last and "loss=6.75" in last and "tok_s=1.3e+03" in last and "mfu" not in last
    assert "eval/mlm_accuracy=0.128" in last and "eval/nsp_accuracy=0.54" in last
    assert "mlm_loss" not in last
