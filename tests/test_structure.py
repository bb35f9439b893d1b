"""The package's shape, as a spec: data flows one way, every module is small enough to read.

* no import cycle among csrgan's modules (an import anywhere in a module counts, deferred ones too);
* the pipeline's lower layers never reach up: ``train``, ``models``, ``data`` and ``metrics*`` import
  nothing from ``csrgan.sweep`` or ``csrgan.cli``; models import nothing from ``data`` or ``train``;
  using a model (``inference``, ``evaluation``) needs no trainer; only ``csrgan/cli`` imports the CLI;
* no function body is longer than 60 lines (signature and docstring not counted).

The import graph is read from the source with ``ast`` (nothing is imported), so the test is fast and
fails on the offending line. ``../shared/tools/structure.py csrgan`` checks the same rules for CI's eyes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "csrgan"
MAX_BODY_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """csrgan modules that ``name`` imports (``from csrgan.x import y`` counts ``csrgan.x.y`` if a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _under(module: str, prefix: str) -> bool:
    """``csrgan.metrics*`` style: the prefix names a module, a package, or the start of a module name."""
    return module.startswith(f"csrgan.{prefix}")


def test_the_import_graph_has_no_cycles() -> None:
    # package __init__ re-exports make harmless parent <-> child loops: follow only leaf modules
    leaves = {m for m, p in MODULES.items() if p.name != "__init__.py"}
    graph = {m: {d for d in GRAPH[m] if d in leaves} for m in leaves}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


FORBIDDEN = [  # (importer prefix, imported prefix, why)
    ("train", "sweep", "trainers know nothing of Tune"),
    ("train", "cli", "no CLI below the face"),
    ("models", "sweep", "models are pure nn"),
    ("models", "cli", "models are pure nn"),
    ("models", "data", "models are pure nn"),
    ("models", "train", "models are pure nn"),
    ("data", "sweep", "data knows no sweep"),
    ("data", "cli", "data knows no CLI"),
    ("data", "train", "data knows no trainer"),
    ("metrics", "sweep", "metrics are pure functions"),
    ("metrics", "cli", "metrics are pure functions"),
    ("metrics", "train", "metrics are pure functions"),
    ("inference", "train", "using a model needs no trainer"),
    ("evaluation", "train", "using a model needs no trainer"),
    ("results", "train", "results are rows, not training"),
    ("cluster", "sweep", "the sweep calls cluster helpers, not the reverse"),
    ("sweep", "cli", "no CLI below the face"),
]


@pytest.mark.parametrize(("src", "dst", "why"), FORBIDDEN, ids=lambda v: v if isinstance(v, str) else None)
def test_lower_layers_never_import_upper_ones(src: str, dst: str, why: str) -> None:
    bad = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if _under(m, src) for d in deps if _under(d, dst))
    assert not bad, f"{why}: {bad}"


def test_only_the_cli_imports_the_cli() -> None:
    bad = sorted(
        f"{m} -> {d}" for m, deps in GRAPH.items() if not _under(m, "cli") for d in deps if _under(d, "cli")
    )
    assert not bad, bad


def test_no_function_body_is_longer_than_60_lines() -> None:
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring does not count
            lines = (node.end_lineno or node.lineno) - body[0].lineno + 1
            if lines > MAX_BODY_LINES:
                long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_checker_sees_every_layer() -> None:
    """A guard for the guard: the rules above would pass vacuously if a prefix matched nothing."""
    for prefix in ("train", "models", "data", "metrics", "sweep", "cli", "results", "cluster", "evaluation"):
        assert any(_under(m, prefix) for m in MODULES), prefix
    assert "csrgan.train.launch" in GRAPH["csrgan.sweep.trial"]  # the sweep calls the launcher
