"""The layout the folders promise, checked by reading the code: the import graph runs downhill only (contract <
producer, worker < pixelmill < bench), producer and worker never meet, the contract never imports the GPU stack,
no two files import each other round a circle, no module is over 700 lines and no door function over 80.

Imports are read with `ast`, at module level and inside functions alike (a function-local import is still an
edge); relative imports are resolved. Importing a package's submodule is an edge to that submodule's file, not
to the package's `__init__.py`."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"contract": 0, "producer": 1, "worker": 1, "pixelmill": 2, "bench": 3}
NEVER_MEET = {"producer": "worker", "worker": "producer"}
GPU_STACK = ("torch", "diffusers")
MODULE_MAX_LINES = 700
DOOR_FUNCTION_MAX_LINES = 80


@dataclass(frozen=True)
class Edge:
    """One import statement: the importing file, its line, the dotted name imported and the file it resolves
    to inside the tree (None: a third-party or standard module)."""

    source: Path
    line: int
    name: str
    target: Path | None

    def __str__(self) -> str:
        where = self.target.relative_to(ROOT) if self.target else "-"
        return f"{self.source.relative_to(ROOT)}:{self.line} imports {self.name} ({where})"


def python_files(folders: tuple[str, ...] = tuple(LAYERS)) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def file_of(name: str) -> Path | None:
    """The tree's file for a dotted module name, or None when the tree has none."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) for every import in the file; `from a import b` yields `a.b` when that is a module
    of the tree, else `a`."""
    package = module_of(path) if path.name == "__init__.py" else module_of(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if file_of(full) is not None else base


def edges(files: list[Path]) -> list[Edge]:
    return [Edge(path, line, name, file_of(name)) for path in files for line, name in imported_names(path)]


def top(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """The strongly connected components with more than one file (Tarjan's algorithm, iterative)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    found: list[list[Path]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_imports_run_from_a_higher_layer_to_a_lower_one_only() -> None:
    bad = [
        f"{edge} (layer {LAYERS[top(edge.source)]} -> {LAYERS[top(edge.target)]})"
        for edge in edges(python_files())
        if edge.target is not None
        and top(edge.target) in LAYERS
        and LAYERS[top(edge.target)] > LAYERS[top(edge.source)]
    ]
    assert not bad, "imports up a layer (contract 0 < producer, worker 1 < pixelmill 2 < bench 3):\n" + "\n".join(bad)


def test_producer_and_worker_never_import_each_other() -> None:
    bad = [
        str(edge)
        for edge in edges(python_files(("producer", "worker")))
        if edge.target is not None and top(edge.target) == NEVER_MEET[top(edge.source)]
    ]
    assert not bad, "producer and worker sit side by side on the contract:\n" + "\n".join(bad)


def test_the_contract_never_imports_the_gpu_stack() -> None:
    bad = [str(edge) for edge in edges(python_files(("contract",))) if edge.name.split(".")[0] in GPU_STACK]
    assert not bad, "the contract loads on hosts without torch:\n" + "\n".join(bad)


def test_no_files_import_each_other_round_a_circle() -> None:
    graph: dict[Path, set[Path]] = {path: set() for path in python_files()}
    for edge in edges(list(graph)):
        if edge.target is not None and edge.target in graph and edge.target != edge.source:
            graph[edge.source].add(edge.target)
    found = cycles(graph)
    shown = [" <-> ".join(str(p.relative_to(ROOT)) for p in component) for component in found]
    assert not found, "import cycles (strongly connected files):\n" + "\n".join(shown)


def test_importing_the_contract_loads_no_door_side_or_gpu_stack() -> None:
    """At runtime too: every module of the contract package loads without a door (`pixelmill`), `producer`,
    `worker` or the GPU stack (a third-party import could pull them in where the source names none)."""
    code = (
        "import pkgutil, sys, importlib, contract\n"
        "names = [m.name for m in pkgutil.walk_packages(contract.__path__, 'contract.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "sides = ('pixelmill', 'producer', 'worker', 'torch', 'diffusers')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in sides)\n"
        "print(len(names), bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, bad = proc.stdout.split(" ", 1)
    assert int(count) >= 12 and bad.strip() == "[]"


def test_no_module_is_over_700_lines() -> None:
    files = [
        path
        for path in ROOT.rglob("*.py")
        if not {"tests", "migrations", ".venv", "build", "node_modules"} & set(path.relative_to(ROOT).parts)
        and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
    ]
    long = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in files}
    bad = [f"{path.relative_to(ROOT)}: {n} lines" for path, n in sorted(long.items()) if n > MODULE_MAX_LINES]
    assert not bad, f"modules over {MODULE_MAX_LINES} lines (outside tests/ and migrations/):\n" + "\n".join(bad)


def test_no_door_function_is_over_80_lines() -> None:
    """A function's length is `end_lineno - lineno + 1` of its `def` node: the signature and body with its
    docstring, without its decorators. Nested functions count on their own and within their parent."""
    bad = []
    for path in python_files(("pixelmill",)):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > DOOR_FUNCTION_MAX_LINES:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not bad, f"door functions over {DOOR_FUNCTION_MAX_LINES} lines:\n" + "\n".join(bad)
