"""The pretraining ablations side by side: BERT-base phase 1 with each recipe change of ``configs/pretrain.py``.

    python -m launch.sweep --sweep=configs/sweeps/ablations.py --root=gs://BUCKET/ablations
    python -m launch.sweep --sweep=configs/sweeps/ablations.py --root=/tmp/ablations --dry_run

Runs (named after the ablation): ``none`` (the original recipe: NSP pairs, dynamic masking, AdamW),
``roberta`` (no NSP, packed whole sentences), ``wwm`` (whole-word masking), ``lamb`` (LAMB, its own peak
learning rate), ``mask20`` (masking rate 0.20) and ``static`` (static masks with dupe factor 10 against
``none``'s dynamic masks). All share the seed and a 100k-step budget (a tenth of the paper's
schedule, with the warmup scaled to match) so they are compared at equal compute; the summary table
(``<root>/sweep_summary.md``) lists each one's held-out MLM accuracy and loss.
"""

from __future__ import annotations

from bert_jax import sweep
from configs.pretrain import ABLATIONS

BASE = "configs/pretrain.py:size=base,phase=1"
STEPS = 100_000


def get_sweep() -> list[dict]:
    return sweep.product(
        [{"name": ablation, "config": f"{BASE},ablation={ablation}"} for ablation in ABLATIONS],
        [{"train.num_steps": STEPS, "optimizer.total_steps": STEPS, "optimizer.warmup_steps": STEPS // 100,
          "train.seed": 0}],
    )
