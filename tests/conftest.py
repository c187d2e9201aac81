"""Shared test setup: 8 simulated CPU devices (for the sharding tests) and shared fixtures."""

import os
import sys

# Must be set before jax is imported anywhere in the test process.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# --- sample_corpus: the embedded demo Wikipedia corpus, built once per test session ---------------
import dataclasses  # noqa: E402
import fcntl  # noqa: E402

import pytest  # noqa: E402


@dataclasses.dataclass(frozen=True)
class SampleCorpus:
    """Where the built demo corpus lives. ``get_source(sample_corpus.spec, 'train')`` reads it."""

    data_dir: str
    dump_path: str
    eval_fraction: float = 0.1

    @property
    def spec(self) -> dict:
        """A fresh source spec (safe to modify) for ``data_pipelines.sources.get_source``."""
        return {
            "name": "wikipedia_dump",
            "dump_path": self.dump_path,
            "data_dir": self.data_dir,
            "eval_fraction": self.eval_fraction,
        }


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> SampleCorpus:
    """gensim's real Wikipedia dump excerpt run through the dump builder (105 articles).

    Built once per test run: under pytest-xdist all workers share one copy (file lock).
    """
    from data_pipelines.sources import demo_dump_path, get_source

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, shared by all xdist workers
    corpus = SampleCorpus(data_dir=str(root / "sample_corpus"), dump_path=demo_dump_path())
    with open(root / "sample_corpus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        get_source({**corpus.spec, "prepare": True}, split="all")
    return corpus
