"""The layout's arrows, checked on the source: no import cycles, and services never reach for tooling.

Rooms (README "Layout"): protos <- shared runtime (search_common, model_runtimes) <- services (gateway,
retriever_service, reranker_service, triton_models) <- tooling (corpora, evaluation, operations), training
and bench. Every import statement counts, also those inside functions and under TYPE_CHECKING: a lazy import
is still an arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ("search_common", "model_runtimes")
SERVICES = ("gateway", "retriever_service", "reranker_service", "triton_models")
TOOLING = ("corpora", "evaluation", "operations")
OFFLINE = (*TOOLING, "training", "bench")
PACKAGES = (*RUNTIME, *SERVICES, *OFFLINE, "deploy", "scripts")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _source_files() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def _imports(path: Path, module: str) -> set[str]:
    """Absolute module names imported by `path` (relative imports resolved against `module`)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in _source_files()}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        graph[module] = {name for name in _imports(path, module) if name in files and name != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _room(module: str) -> str:
    return module.split(".", 1)[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_the_walk_sees_the_whole_tree(graph: dict[str, set[str]]) -> None:
    for expected in (
        "gateway.pipeline",
        "model_runtimes.cross_encoder.runtime",
        "operations.demo",
        "bench.rerank",
    ):
        assert expected in graph
    assert "gateway.pipeline" in graph["gateway.servicer"]  # an arrow is found where one exists


def test_no_module_imports_itself_back_through_others(graph: dict[str, set[str]]) -> None:
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_services_and_the_shared_runtime_never_import_tooling_training_or_bench(
    graph: dict[str, set[str]],
) -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if _room(module) in (*RUNTIME, *SERVICES)
        for target in targets
        if _room(target) in OFFLINE
    )
    assert wrong == []


def test_the_shared_runtime_never_imports_a_service(graph: dict[str, set[str]]) -> None:
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if _room(module) in RUNTIME
        for target in targets
        if _room(target) in SERVICES
        or (_room(module) == "search_common" and _room(target) == "model_runtimes")
    )
    assert wrong == []


def test_nothing_imports_bench(graph: dict[str, set[str]]) -> None:
    assert (
        sorted(
            m for m, targets in graph.items() if _room(m) != "bench" for t in targets if _room(t) == "bench"
        )
        == []
    )


def test_rooms_depend_on_each_other_one_way(graph: dict[str, set[str]]) -> None:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(_room(module), set()).update(_room(t) for t in targets if _room(t) != _room(module))
    assert _cycles(rooms) == []
