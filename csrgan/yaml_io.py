"""Reading user YAML safely: bounded size and alias expansion, no duplicate keys, errors that name the file.

``yaml.safe_load`` alone constructs only plain data, but it (1) keeps the *last* of two equal keys, so a
repeated ``sr.mix_prob:`` under ``search.parameters`` silently shrinks a grid, (2) accepts any file size,
and (3) builds aliases as shared references that anything walking the data (pydantic's validation, an
error message's ``repr``) expands: nine levels of nine aliases ("billion laughs") are 9**9 nodes. Here:

* the file is at most :data:`MAX_BYTES` and must be UTF-8 (the error names the file and the byte);
* a mapping that repeats a key is an error naming both lines;
* the document, with every alias expanded, has at most :data:`MAX_NODES` nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # 1 MiB: an experiment file is a few KB; a pipeline file less
MAX_NODES = 100_000  # expanded nodes; the largest shipped experiment file has a few hundred
EXCERPT_CHARS = 80  # longest value echoed back in an error message


class YAMLInputError(ValueError):
    """A YAML file that cannot be read as data. The message names the file (and line where known)."""


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, without walking more of ``value`` than needed."""
    import reprlib

    r = reprlib.Repr()  # keyword arguments only from Python 3.12
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = limit, limit, 6, 6, 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and counts expanded nodes."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
                seen.setdefault(key, line)
            except TypeError:
                continue  # unhashable key: the base class raises its own error
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {excerpt(key)} (first on line {first}, again on line {line}): YAML keeps "
                    "only the last one; remove or merge them",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Node, limit: int) -> int:
    """Nodes in the document with every alias expanded (memoised, so a bomb is measured, not expanded)."""
    sizes: dict[int, int] = {}

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = limit + 1  # a recursive alias counts as unbounded
        if isinstance(node, ScalarNode):
            n = 1
        elif isinstance(node, SequenceNode):
            n = 1 + sum(size(c) for c in node.value)
        elif isinstance(node, MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        sizes[key] = min(n, limit + 1)
        return sizes[key]

    return size(root)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document from ``text`` with the rules above; ``source`` names it in errors."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        n = _expanded_size(root, MAX_NODES)
        if n > MAX_NODES:
            raise YAMLInputError(
                f"{source}: the document expands (aliases included) to more than {MAX_NODES:,} values; "
                "an experiment file has a few hundred (an alias bomb?)"
            )
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise YAMLInputError(f"{source}: not valid YAML: {_short_yaml_error(exc)}") from None
    finally:
        loader.dispose()


def _short_yaml_error(exc: yaml.YAMLError) -> str:
    """PyYAML's message with the line/column, without its echo of the offending text."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    text = f"{context + ': ' if context else ''}{problem}{where}"
    return text if len(text) <= 400 else text[:397] + "..."


def read_text_bounded(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """The file's text: at most ``max_bytes`` and UTF-8, else :class:`YAMLInputError` naming the file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise YAMLInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > max_bytes:
        raise YAMLInputError(
            f"{path}: {size / 2**20:.1f} MiB is more than the {max_bytes / 2**20:g} MiB a YAML file may "
            "have here (an experiment file is a few KB)"
        )
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YAMLInputError(
            f"{path}: not UTF-8 text (byte {exc.start}, line {line}: {data[exc.start : exc.start + 4]!r}); "
            "save the file as UTF-8"
        ) from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file with the rules above."""
    path = Path(path)
    return load_yaml_text(read_text_bounded(path), str(path))
