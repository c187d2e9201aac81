"""Run files on ``gs://`` workdirs, raw data on ``gs://``: bert-jax's own file access goes through ``etils.epath``.

An in-memory filesystem stands in for Google Cloud Storage: it is registered with fsspec under the
``gcs`` protocol, the one ``etils.epath`` asks fsspec for on ``gs://`` paths when TensorFlow is absent
(in production, ``gcsfs``). Each test checks that the files land in the bucket, read back, and that
nothing was written to a local directory named after the URI; the raw-data readers (a Wikipedia dump,
a folder of books) read the same documents from the bucket as from local disk. (Orbax writes checkpoints to ``gs://``
through TensorStore's own GCS driver, which needs the network; its local behaviour is tested in
test_checkpoint.py and test_train_run.py.)
"""

from __future__ import annotations

import json
import os

import ml_collections
import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from bert_jax import fileio, logs, run_config, squad_decoding
from bert_jax.tasks import finetune_base
from data_pipelines.sources import books, demo_dump_path, wikipedia_dump

WORKDIR = "gs://bucket/runs/demo"


class FakeGCS(MemoryFileSystem):
    """``gs://`` in memory: its own store, the protocol names gcsfs registers, gcsfs's open options."""

    protocol = ("gcs", "gs")
    store: dict = {}
    pseudo_dirs = [""]

    def __init__(self, *args, finalize_on_close: bool = False, **kwargs):
        del finalize_on_close  # a gcsfs option (write the object on close), nothing to do in memory
        super().__init__(*args, **kwargs)

    def open(self, path, mode="rb", **kwargs):  # object stores cannot append
        if "a" in mode:
            raise OSError(f"{path}: object stores have no append mode")
        return super().open(path, mode, **kwargs)


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """A fresh fake bucket for ``gs://`` paths; the test runs in an empty local directory."""
    import fsspec
    from etils.epath import backend

    monkeypatch.setattr(FakeGCS, "store", {})
    monkeypatch.setattr(FakeGCS, "pseudo_dirs", [""])
    fsspec.register_implementation("gcs", FakeGCS, clobber=True)
    FakeGCS.clear_instance_cache()
    backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.chdir(tmp_path)
    yield FakeGCS
    backend.fsspec_backend._get_filesystem.cache_clear()
    assert os.listdir(tmp_path) == [], "a gs:// path was written to the local disk"


def _object(bucket, path: str) -> bytes:
    return bucket.store[path].getvalue()


def test_the_fake_bucket_is_what_epath_uses(bucket):
    assert fileio.is_remote(WORKDIR) and not fileio.is_remote("/tmp/run") and not fileio.is_remote("runs/a")
    path = fileio.write_json(f"{WORKDIR}/x.json", {"a": 1})
    assert path == f"{WORKDIR}/x.json"
    assert json.loads(_object(bucket, path)) == {"a": 1}
    assert fileio.read_json(path) == {"a": 1}


def test_metrics_are_rewritten_whole_and_survive_a_resumed_writer(bucket):
    writer = logs.MetricWriter(WORKDIR, tensorboard=False)
    for step in (10, 20):
        writer.write(step, "train", {"loss": 5.0 / step, "mlm_accuracy": step / 100})
    writer.write(20, "eval", {"loss": 0.3})
    writer.close()
    resumed = logs.MetricWriter(WORKDIR, tensorboard=False)  # a resumed run keeps what was logged
    resumed.write(30, "train", {"loss": 0.1, "mlm_accuracy": 0.3})
    resumed.close()
    lines = _object(bucket, f"{WORKDIR}/{logs.METRICS_FILE}").decode().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 20, 30]
    records = logs.read_metrics(WORKDIR)
    assert [(r["step"], r["split"]) for r in logs.latest_records(records)] == [
        (10, "train"), (20, "eval"), (20, "train"), (30, "train")]

    curves = logs.plot_curves(WORKDIR)
    assert curves == f"{WORKDIR}/{logs.CURVES_FILE}"
    assert _object(bucket, curves).startswith(b"\x89PNG\r\n")


def test_local_metrics_are_appended(tmp_path):
    workdir = str(tmp_path / "run")
    for step in (1, 2):
        writer = logs.MetricWriter(workdir, tensorboard=False)
        writer.write(step, "train", {"loss": 1.0})
        writer.close()
    assert [r["step"] for r in logs.read_metrics(workdir)] == [1, 2]
    os.remove(os.path.join(workdir, logs.METRICS_FILE))  # leave the test's directory as it was


def test_run_config_round_trips_through_the_bucket(bucket):
    config = ml_collections.ConfigDict({"train": {"num_steps": 7}, "model": {"size": "tiny"}})
    path = run_config.save_config(config, WORKDIR)
    assert path == f"{WORKDIR}/config.json"
    assert run_config.load_saved_config(WORKDIR) == {"train": {"num_steps": 7}, "model": {"size": "tiny"}}


def test_fine_tuning_prediction_files_go_to_the_bucket(bucket):
    tsv = finetune_base.write_tsv(f"{WORKDIR}/predictions/dev/predictions.tsv", ("index", "prediction"),
                                  [(0, "pos"), (1, "a\ttab")])
    assert _object(bucket, tsv).decode() == 'index\tprediction\n0\tpos\n1\t"a\ttab"\n'
    decoded = squad_decoding.SquadPredictions(predictions={"q1": "Denver Broncos"},
                                              nbest={"q1": [{"text": "Denver Broncos", "probability": 1.0}]},
                                              null_odds={"q1": -3.5})
    paths = squad_decoding.write_squad_predictions(f"{WORKDIR}/predictions/dev", decoded)
    assert sorted(paths) == ["nbest_predictions", "null_odds", "predictions"]
    assert json.loads(_object(bucket, paths["predictions"])) == {"q1": "Denver Broncos"}
    assert epath.Path(paths["null_odds"]).exists()


def test_remote_tokenizer_files_are_refused_with_the_fix(bucket):
    from bert_jax import train

    config = ml_collections.ConfigDict({"tokenizer": {"kind": "wordpiece", "vocab_file": f"{WORKDIR}/vocab.txt",
                                                      "build_if_missing": True}})
    with pytest.raises(ValueError, match=r"gs://bucket/runs/demo/vocab.txt: tokenizers read local files.*gsutil"):
        train.prepare_tokenizer(config)


def test_a_wikipedia_dump_streams_from_the_bucket(bucket):
    local = demo_dump_path()
    remote = f"gs://bucket/dumps/{os.path.basename(local)}"
    with open(local, "rb") as f:
        epath.Path(remote).write_bytes(f.read())
    pages = [(p.page_id, p.title, p.wikitext) for p in wikipedia_dump.iter_dump_pages(local)]
    assert len(pages) == 206
    assert [(p.page_id, p.title, p.wikitext) for p in wikipedia_dump.iter_dump_pages(remote)] == pages


def test_books_are_read_from_a_bucket_folder(bucket, tmp_path_factory):
    texts = {"austen/emma.txt": "Emma Woodhouse, handsome, clever, and rich.\n\nShe was the youngest.\n",
             "melville/moby_dick.txt": "Call me Ishmael.\nSome years ago.\n", "notes.md": "not a book"}
    local = tmp_path_factory.mktemp("books")
    for name, text in texts.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_text(text)
        fileio.write_text(f"gs://bucket/books/{name}", text)
    read = {}
    for where in (str(local), "gs://bucket/books"):
        summary = books.BooksSummary()
        read[where] = list(books.iter_book_documents(where, "book_per_file", summary))
        assert (summary.txt_files, summary.other_files) == (2, 1)
    assert read["gs://bucket/books"] == read[str(local)]
    assert [title for _, title, _ in read[str(local)]] == ["austen/emma.txt", "melville/moby_dick.txt"]
