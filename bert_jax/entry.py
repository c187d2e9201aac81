"""The one helper behind every ``launch/*.py`` entry point (and ``bert-jax <command>``).

A launch module defines its flags, decorates its ``main`` and ends with ``main.run()``::

    _CONFIG = entry.define_config("config", "configs/demo.py", "Run config file (get_config()).")

    @entry.main(config=_CONFIG, distributed=True)
    def main(argv):
        entry.print_summary(train.run(_CONFIG.value, _WORKDIR.value))

    if __name__ == "__main__":
        main.run()

Around ``main`` it sets up logging (INFO from the project, warnings from the libraries, the noise
filters below), applies ``train.host_heap`` before JAX starts its threads, joins a multi-process run
(``distributed.initialize_from_flags``), and turns *expected* errors into one line on stderr and exit
status 2: the project's own error classes, and ``ValueError`` / ``OSError`` / ``RuntimeError`` raised
by the project's code (config, data, paths, vocabulary, mesh problems, whose messages name the field,
file or line). Anything else is a bug and keeps its traceback; ``--debug`` shows it for every error.
A config override of a field that does not exist names the closest real one
(``unknown field train.lerning_rate; did you mean optimizer.learning_rate?``).
``--help`` prints the module's docstring and flags and exits 0.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from bert_jax import config_fields

_DEBUG = flags.DEFINE_boolean("debug", False, "Show the Python traceback of an expected error too.")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_DIRS = tuple(os.path.join(_ROOT, name) + os.sep for name in ("bert_jax", "data_pipelines", "configs", "launch"))
PROJECT_PACKAGES = ("bert_jax.", "data_pipelines.", "configs.", "launch.")
EXIT_EXPECTED_ERROR = 2
_HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")
_is_config_flag = config_flags.config_flags.is_config_flag


# --- expected errors: one line ------------------------------------------------------------------------

def _raised_by_project(error: BaseException) -> bool:
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(PROJECT_DIRS)


def is_expected(error: BaseException) -> bool:
    """An error the user can act on: a project error class, or a plain error raised by project code."""
    if type(error).__module__.startswith(PROJECT_PACKAGES):
        return True
    return isinstance(error, (ValueError, OSError, RuntimeError, flags.Error)) and _raised_by_project(error)


def one_line(message: str) -> str:
    """A multi-line message (``problems:\\n  - a\\n  - b``) as one line (``problems: a; b``)."""
    if "Error whilst parsing config file" in message:  # ml_collections embeds the traceback
        message = message.rstrip().splitlines()[-1]
        message = re.sub(r"^\w+(Error|Exception): ", "", message)
    parts = [line.strip().removeprefix("- ") for line in message.splitlines() if line.strip()]
    if not parts:
        return ""
    head, rest = parts[0], parts[1:]
    return head + (" " if head.endswith(":") else "; ") + "; ".join(rest) if rest else head


def fail(name: str, message: str) -> None:
    """Prints ``name: message`` as one line on stderr and exits with status 2."""
    print(f"{name}: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_EXPECTED_ERROR)


def _debug_requested(argv: list[str]) -> bool:
    return any(arg in ("--debug", "--debug=true", "--debug=True", "--debug=1") for arg in argv)


def _config_flag_defaults() -> dict[str, str]:
    """``name -> default path`` of every config-file flag defined so far."""
    return {name: str(flag.default_as_str).strip("'") for name, flag in flags.FLAGS._flags().items()  # pylint: disable=protected-access
            if _is_config_flag(flag)}


def _config_error_message(error: BaseException, argv: list[str], config_defaults: dict[str, str]) -> str | None:
    """An override of a field the config does not have: ``unknown field X; did you mean Y?``."""
    if not isinstance(error, (KeyError, AttributeError)):
        return None
    for name, default in config_defaults.items():
        given = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
        overrides = [m.group(1) for m in (re.match(rf"--(?:no)?{name}\.([^=]+)", a) for a in argv) if m]
        if not overrides:
            continue
        try:
            config = config_fields.load_config_file(given[-1] if given else default)
        except Exception:  # pylint: disable=broad-except
            return None
        unknown = [path for path in overrides if not config_fields.has_field(config, path)]
        if unknown:
            return "; ".join(config_fields.unknown_field_message(config, path) for path in unknown)
    return None


def _report(name: str, error: BaseException, argv: list[str], *, parsing: bool = False,
            config_defaults: dict[str, str] | None = None) -> None:
    """Exits with one line for an expected error (or a flag or config problem while parsing); else returns."""
    if _debug_requested(argv):
        return
    config_message = _config_error_message(
        error, argv, _config_flag_defaults() if config_defaults is None else config_defaults) if parsing else None
    if config_message:
        fail(name, config_message)
    if (parsing and isinstance(error, (ValueError, OSError, flags.Error))) or is_expected(error):
        fail(name, str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error))


def define_config(name: str, default: str, help_text: str, **kwargs: Any) -> flags.FlagHolder:
    """``config_flags.DEFINE_config_file`` with packaged-config resolution and one-line errors.

    ``default`` (and any ``--<name>=PATH`` given) that does not exist here names the packaged config
    (``configs/demo.py`` from any directory after ``pip install``). When ``--<name>`` is not given, the
    default is loaded here, at import; a bad override then fails here too, as one line.
    """
    help_text += " Its fields, comments and defaults: bert-jax config --config=FILE."
    default = config_fields.resolve_config_path(default)
    try:
        return config_flags.DEFINE_config_file(name, default, help_text, **kwargs)
    except Exception as error:  # pylint: disable=broad-except
        _report(_command_name(), error, sys.argv, parsing=True, config_defaults={name: default})
        raise


# --- logging ------------------------------------------------------------------------------------------

class _LibraryNoise(logging.Filter):
    """Says TFDS's "Using custom data configuration" once per config and drops Orbax's "Metadata file does
    not exist" (logged on every restore of a checkpoint written without it)."""

    ONCE = ("Using custom data configuration",)
    DROP = ("Metadata file does not exist",)

    def __init__(self):
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith(self.DROP):
            return False
        if text.startswith(self.ONCE):
            message = record.getMessage()
            if message in self._seen:
                return False
            self._seen.add(message)
        return True


def _quiet_local_tfds_builds() -> None:
    """TFDS prints "Downloading and preparing dataset ..." (stdout, not logging) for every build; for
    the project's own builders of local files nothing is downloaded: log one line instead."""
    builder_module = sys.modules.get("tensorflow_datasets.core.dataset_builder")
    builder = getattr(builder_module, "DatasetBuilder", None)
    original = getattr(builder, "_log_download_bytes", None)
    if original is None or getattr(original, "_bert_jax", False):
        return

    @functools.wraps(original)
    def log_download_bytes(self):
        if type(self).__module__.startswith(PROJECT_PACKAGES):
            logging.getLogger("absl").info("preparing dataset %s from local files in %s", self.name, self.data_dir)
        else:
            original(self)

    log_download_bytes._bert_jax = True  # pylint: disable=protected-access
    builder._log_download_bytes = log_download_bytes  # pylint: disable=protected-access
    done = getattr(builder, "_log_download_done", None)
    if done is not None:
        builder._log_download_done = lambda self: (None if type(self).__module__.startswith(PROJECT_PACKAGES)
                                                   else done(self))


def setup_logging() -> None:
    """``logs.setup_logging`` (unless ``--verbosity`` was given) plus the library-noise filters."""
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

    from bert_jax import logs  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS["verbosity"].present:
        logs.setup_logging()
    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _LibraryNoise) for f in handler.filters):
        handler.addFilter(_LibraryNoise())
    _quiet_local_tfds_builds()


# --- the entry point ----------------------------------------------------------------------------------

def _command_name(module_file: str | None = None) -> str:
    stem = os.path.splitext(os.path.basename(module_file or sys.argv[0]))[0]
    return stem.replace("_", "-")


def _help_text(module: Any, distributed: bool) -> str:
    by_module = flags.FLAGS.flags_by_module_dict()
    keys = [k for k in by_module if k == module.__name__ or os.path.abspath(k) == os.path.abspath(module.__file__)]
    keys += [__name__] + (["bert_jax.distributed"] if distributed else [])  # define_config's flags are here
    sections = [(module.__doc__ or "").strip()]
    for key in keys:
        shown = [f for f in by_module.get(key, []) if "." not in f.name]  # not the --config.<field> flags
        sections.append("\n".join(_flag_line(f) for f in sorted(shown, key=lambda f: f.name)))
    if any(_is_config_flag(f) for k in keys for f in by_module.get(k, [])):
        sections.append("Every --config.<field> and its comment and default: bert-jax config --config=FILE "
                        "(or python -m launch.config --config=FILE).")
    return "\n\n".join(s for s in sections if s)


def _flag_line(flag: flags.Flag) -> str:
    default = f" (default: {flag.default_as_str})" if flag.default_as_str else ""
    return f"  --{flag.name}: {flag.help}{default}"


class Entry:
    """A launch ``main`` with the setup and error handling described in the module docstring."""

    def __init__(self, fn: Callable[[list[str]], Any], *, config: flags.FlagHolder | None, distributed: bool,
                 failure: str | None):
        functools.update_wrapper(self, fn)
        self._fn, self._config, self._distributed = fn, config, distributed
        self._module = sys.modules[fn.__module__]
        name = sys.argv[0] if sys.argv[0].startswith("bert-jax ") else _command_name(self._module.__file__)
        self.name = name + (f": {failure}" if failure else "")

    def _parse(self, argv: list[str]) -> list[str]:
        if any(arg in _HELP_FLAGS for arg in argv[1:]):
            print(_help_text(self._module, self._distributed))
            sys.exit(0)
        argv = [argv[0]] + [_resolve_config_arg(self.name, arg) for arg in argv[1:]]
        sys.argv[:] = argv  # config_flags reads its overrides from sys.argv
        try:
            return flags.FLAGS(argv)
        except Exception as error:  # pylint: disable=broad-except
            _report(self.name, error, argv, parsing=True)
            raise

    def __call__(self, argv: list[str]) -> Any:
        setup_logging()
        try:
            if self._config is not None:
                config = self._config.value
                if isinstance(config, config_flags.config_flags._ErrorConfig):  # pylint: disable=protected-access
                    raise FileNotFoundError(one_line(str(config._error)))  # pylint: disable=protected-access
                from bert_jax import perf  # pylint: disable=g-import-not-at-top

                perf.apply_host_heap(config.get("train", {}).get("host_heap", "auto"))  # before JAX starts
            if self._distributed:
                from bert_jax import distributed  # pylint: disable=g-import-not-at-top

                distributed.initialize_from_flags()  # before anything touches a device
            return self._fn(argv)
        except Exception as error:  # pylint: disable=broad-except
            _report(self.name, error, sys.argv)
            raise

    def run(self, argv: list[str] | None = None) -> None:
        """Parses ``argv`` (default ``sys.argv``) and runs; what ``app.run`` does, with one-line errors."""
        app.run(self, argv=list(sys.argv if argv is None else argv), flags_parser=self._parse)


def _resolve_config_arg(command: str, arg: str) -> str:
    """``--config=demo.py`` -> the packaged config when ``demo.py`` is not here; a missing file fails."""
    name, sep, value = arg.partition("=")
    flag = flags.FLAGS._flags().get(name.lstrip("-")) if sep and arg.startswith("--") else None  # pylint: disable=protected-access
    if flag is None or not _is_config_flag(flag):
        return arg
    resolved = config_fields.resolve_config_path(value)
    if not os.path.isfile(resolved.partition(":")[0]):
        fail(command, f"{name}={value}: no such config file (here or in the installed configs package)")
    return f"{name}={resolved}"


def main(*, config: flags.FlagHolder | None = None, distributed: bool = False,
         failure: str | None = None) -> Callable[..., Entry]:
    """Decorates a launch ``main(argv)``: see the module docstring.

    Args:
      config: the run-config flag whose ``train.host_heap`` is applied before JAX starts.
      distributed: join a multi-process run first (pretraining and fine-tuning).
      failure: words before an expected error's message (``AOT check failed``).
    """
    return lambda fn: Entry(fn, config=config, distributed=distributed, failure=failure)


def no_arguments(argv: list[str]) -> None:
    """Refuses positional arguments (a forgotten ``--``)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")


def print_summary(summary: dict[str, Any]) -> None:
    """Prints a run summary as JSON in process 0 only."""
    import jax  # pylint: disable=g-import-not-at-top

    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2, default=str))
