"""The fields of a run config file: where each is defined, its comment and default, and typo suggestions.

``describe`` backs ``bert-jax config --config=FILE``: it runs the file's ``get_config`` while recording
every assignment to a ``ConfigDict`` field (file and line), then reads the comment of the first
assignment (the definition: a trailing ``# comment`` or the comment lines just above it) and its value
(the default), e.g. ``train.batch_size = 16  (default 256)  # Global batch size ...``. The model
section is built from ``ModelConfig``; its fields' text is the dataclass docstring's ``Attributes``.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import io
import os
import sys
import tokenize
from typing import Any

import ml_collections

CONFIGS_PACKAGE = "configs"
_ML_COLLECTIONS_DIR = os.path.dirname(ml_collections.__file__)


def resolve_config_path(spec: str) -> str:
    """``path[:arg]`` as given when ``path`` exists, else the packaged config of that name.

    ``demo.py`` or ``configs/demo.py`` outside a checkout name ``configs/demo.py`` of the installed
    ``configs`` package; anything else is returned unchanged (the loader then names it as missing).
    """
    path, sep, arg = spec.partition(":")
    if not path or os.path.exists(path):
        return spec
    package = importlib.util.find_spec(CONFIGS_PACKAGE)
    if package is None or not package.submodule_search_locations:
        return spec
    relative = path.removeprefix(f"{CONFIGS_PACKAGE}/")
    for folder in package.submodule_search_locations:
        candidate = os.path.join(folder, relative)
        if os.path.isfile(candidate):
            return candidate + sep + arg
    return spec


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Runs ``get_config(arg)`` of the file ``spec`` = ``path[:arg]`` names (no command-line overrides)."""
    path, _, arg = resolve_config_path(spec).partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found (nor in the installed configs package)")
    module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(*([arg] if arg else []))


def leaf_paths(config: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every non-section field (lists and dicts of a list are leaves)."""
    paths = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        paths += leaf_paths(value, f"{path}.") if isinstance(value, ml_collections.ConfigDict) else [path]
    return paths


def has_field(config: Any, path: str) -> bool:
    """Whether the dotted ``path`` names a field or section of ``config``."""
    node = config
    for key in path.split("."):
        if isinstance(node, (ml_collections.ConfigDict, dict)) and key in node:
            node = node[key]
        elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False
    return True


def closest_field(path: str, leaves: list[str]) -> str | None:
    """The leaf most like ``path``: first by the last name (``lerning_rate`` ~ ``learning_rate``, whatever
    section it is in), then by the whole path; None when nothing is close."""
    def score(leaf: str) -> tuple[float, float]:
        last = difflib.SequenceMatcher(None, path.rsplit(".", 1)[-1], leaf.rsplit(".", 1)[-1]).ratio()
        return last, difflib.SequenceMatcher(None, path, leaf).ratio()

    best = max(leaves, key=score, default=None)
    return best if best is not None and max(score(best)) >= 0.6 else None


def unknown_field_message(config: Any, path: str) -> str:
    """``unknown field X; did you mean Y?`` for an override of a field ``config`` does not have."""
    guess = closest_field(path, leaf_paths(config))
    hint = f"did you mean {guess}?" if guess else "bert-jax config --config=FILE lists the fields"
    return f"unknown field {path}; {hint}"


# --- field documentation ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _source(path: str) -> tuple[ast.Module, dict[int, str], list[str]]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    comments = {token.start[0]: token.string.lstrip("#").strip()
                for token in tokenize.generate_tokens(io.StringIO(text).readline) if token.type == tokenize.COMMENT}
    return ast.parse(text), comments, text.splitlines()


def _statement_at(tree: ast.Module, line: int) -> ast.stmt | None:
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.If, ast.For,
                                                                 ast.With, ast.Try, ast.While)):
            if node.lineno <= line <= node.end_lineno and (best is None or node.lineno >= best.lineno):
                best = node
    return best


def comment_at(path: str, line: int) -> str:
    """The comment of the statement at ``path:line``: its trailing ``#`` comment(s), else the block of
    comment lines right above it."""
    tree, comments, lines = _source(path)
    statement = _statement_at(tree, line)
    first, last = (statement.lineno, statement.end_lineno) if statement else (line, line)
    trailing = [comments[n] for n in range(first, last + 1) if n in comments
                and not lines[n - 1].lstrip().startswith("#")]
    if trailing:
        return " ".join(trailing)
    above, n = [], first - 1
    while n in comments and lines[n - 1].lstrip().startswith("#"):
        above.insert(0, comments[n])
        n -= 1
    return " ".join(above)


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name -> text`` of a Google-style ``Attributes:`` docstring section."""
    docs, name, inside = {}, None, False
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            inside = True
        elif inside and stripped:
            head, sep, text = stripped.partition(": ")
            if sep and head.isidentifier() and line.startswith(" " * 6) and not line.startswith(" " * 8):
                name = head
                docs[name] = text
            elif name:
                docs[name] += " " + stripped
    return docs


def _dataclass_field_docs(cls: type) -> dict[str, str]:
    """``name -> comment`` of each field of a dataclass whose fields carry ``#`` comments (above or after)."""
    import inspect  # pylint: disable=g-import-not-at-top

    path = inspect.getsourcefile(cls)
    lines, start = inspect.getsourcelines(cls)
    docs = {}
    for offset, line in enumerate(lines):
        name = line.strip().partition(":")[0]
        if line.startswith("    ") and not line.startswith("     ") and name in getattr(cls, "__dataclass_fields__", {}):
            docs[name] = comment_at(path, start + offset)
    return docs


def _record_assignments(spec: str) -> tuple[ml_collections.ConfigDict, dict[tuple[int, str], list]]:
    """Loads the config file while recording ``(id(section), key) -> [(file, line, value), ...]``."""
    original = ml_collections.ConfigDict.__setattr__
    sites: dict[tuple[int, str], list] = {}

    def recording(self, key, value):
        frame = sys._getframe(1)  # pylint: disable=protected-access
        while frame and frame.f_code.co_filename.startswith(_ML_COLLECTIONS_DIR):
            frame = frame.f_back
        if frame and not key.startswith("_"):
            sites.setdefault((id(self), key), []).append((frame.f_code.co_filename, frame.f_lineno, value))
        return original(self, key, value)

    ml_collections.ConfigDict.__setattr__ = recording
    try:
        config = load_config_file(spec)
    finally:
        ml_collections.ConfigDict.__setattr__ = original
    return config, sites


def describe(spec: str, resolved: ml_collections.ConfigDict) -> str:
    """One line per field of ``resolved`` (the config with overrides): value, default where it differs,
    and the comment where the field is defined.

    Args:
      spec: the config file, ``path[:arg]``.
      resolved: the config the run would use (``--config.*`` overrides applied).
    """
    from bert_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top

    from_file, sites = _record_assignments(spec)
    from data_pipelines.loader import DataSettings  # pylint: disable=g-import-not-at-top

    model_docs = _attribute_docs(ModelConfig)
    data_docs = _dataclass_field_docs(DataSettings)  # default_data_config() is built from its fields
    rows = []

    def walk(section, prefix, section_comment):
        for key, value in section.items():
            path = f"{prefix}{key}"
            records = sites.get((id(section), key), [])
            comment = comment_at(*records[0][:2]) if records else ""
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, f"{path}.", comment)
                continue
            comment = (comment or (model_docs.get(key, "") if prefix == "model." else "")
                       or (data_docs.get(key, "") if prefix == "data." else "") or section_comment)
            default = records[0][2] if records else value
            rows.append((path, _lookup(resolved, path, value), default, comment))

    walk(from_file, "", "")
    lines = [f"# {spec}: field = value  (default where the field is defined, when different)  # comment"]
    for path, value, default, comment in rows:
        text = f"{path} = {value!r}"
        if default != value:
            text += f"  (default {default!r})"
        lines.append(text + (f"  # {comment}" if comment else ""))
    return "\n".join(lines)


def _lookup(config: Any, path: str, fallback: Any) -> Any:
    node = config
    for key in path.split("."):
        if key not in node:
            return fallback
        node = node[key]
    return node
