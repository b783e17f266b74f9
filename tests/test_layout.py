"""The architecture, checked from the source: the floor stands alone, the domain packages never
reach up into the web layer, nothing imports in a circle, no product module sprawls, and the
tests and benchmarks share a kit instead of importing each other.

Every import counts, including those inside functions: an import moved into a function to
dodge a cycle is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("app", "tutors", "kb", "avatars", "turn")
FLOOR = ("app.core",)
DOMAIN = ("app.speech", "app.conversation", "tutors", "kb", "avatars", "turn")
MAX_LINES = 500


def _modules(*packages: str) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in known:
                    found.add(child)  # `from package import module`
                elif node.module in known:
                    found.add(node.module)
    return found


def _graph(*packages: str) -> dict[str, set[str]]:
    modules = _modules(*packages)
    known = set(modules) | set(_modules(*PRODUCT))
    return {name: _imports(path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
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
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_floor_imports_nothing_else_of_the_project() -> None:
    graph = _graph(*PRODUCT)
    leaks = {
        m: sorted(i for i in imports if not _within(i, FLOOR)) for m, imports in graph.items() if _within(m, FLOOR)
    }
    assert {m: i for m, i in leaks.items() if i} == {}


def test_domain_packages_never_import_the_web_layer() -> None:
    graph = _graph(*PRODUCT)
    web = lambda m: not _within(m, FLOOR + DOMAIN)  # noqa: E731
    reaching_up = {m: sorted(filter(web, imports)) for m, imports in graph.items() if _within(m, DOMAIN)}
    assert {m: i for m, i in reaching_up.items() if i} == {}
    assert "app" not in {i for imports in graph.values() for i in imports}, "the `app` package itself stays empty"


def test_no_import_cycles() -> None:
    assert _cycles(_graph(*PRODUCT)) == []


def test_the_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]


def test_no_product_module_sprawls() -> None:
    long = {
        name: lines
        for name, path in _modules(*PRODUCT).items()
        if ".migrations." not in name and (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_tests_and_benchmarks_share_a_kit_not_each_other() -> None:
    known = set(_modules("tests", "bench"))
    tests = {m: _imports(p, known) for m, p in _modules("tests").items()}
    bench = {m: _imports(p, known) for m, p in _modules("bench").items()}
    assert {m: sorted(i) for m, i in tests.items() if any(x.startswith("bench") for x in i)} == {}
    into_tests = {
        m: sorted(x for x in i if x.startswith("tests") and not _within(x, ("tests.kit",))) for m, i in bench.items()
    }
    assert {m: i for m, i in into_tests.items() if i} == {}
    kit = {
        m: sorted(x for x in i if not _within(x, ("tests.kit",)))
        for m, i in tests.items()
        if _within(m, ("tests.kit",))
    }
    assert {m: i for m, i in kit.items() if i} == {}, "the kit stands on the product alone"
