"""The layering of docs/architecture.md, checked on the source with ``ast``.

Every import statement counts: at module level, inside functions, under
``if TYPE_CHECKING:``. ``from pkg import name`` is an import of ``pkg.name``
when that is a module of ours, else of ``pkg``. Only the three packages of
this tree are in the graph: the client package ``coffer`` (the bottom layer),
the daemon ``cofferd`` and the reference upstream ``coffer_upstream``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Each package of the tree and the directory that holds it.
PACKAGES = {
    "coffer": REPO / "client",
    "cofferd": REPO / "daemon",
    "coffer_upstream": REPO / "upstream",
}


#: Import cycles known today and being removed; each entry is one strongly
#: connected component, exactly. Nothing else may be added here: empty it once
#: the cycle is gone (the test fails on an entry that no longer matches).
@dataclass(frozen=True)
class Import:
    """One imported module name, as written (resolved), and where."""

    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line} imports {self.target}"


def module_files() -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    found: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def imports_of(module: str, path: Path) -> Iterator[Import]:
    """Every module ``module`` imports, wherever in the file the statement is."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module, node.level)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield Import(sub if sub in MODULES else base, path, node.lineno)


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        assert name is not None
        return name
    package = module.split(".") if is_package else module.split(".")[:-1]
    anchor = package[: len(package) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)


def all_imports() -> dict[str, list[Import]]:
    return {module: list(imports_of(module, path)) for module, path in MODULES.items()}


def top(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_graph_sees_every_package_and_deferred_imports() -> None:
    # The checks below are only as good as the graph: make sure it is not empty
    # and that an import inside a function is in it.
    assert {"coffer.cli", "cofferd.app", "coffer_upstream.api"} <= MODULES.keys()
    graph = all_imports()
    assert any(i.target == "coffer.client" for i in graph["coffer.cli"])
    assert all(name.startswith(tuple(PACKAGES)) for name in MODULES)


def test_the_client_package_imports_only_the_standard_library_and_itself() -> None:
    bad = [
        str(i)
        for module, found in all_imports().items()
        if top(module) == "coffer"
        for i in found
        if top(i.target) != "coffer" and top(i.target) not in sys.stdlib_module_names
    ]
    assert bad == [], "coffer must stay standard library only:\n" + "\n".join(bad)


def test_the_reference_upstream_never_imports_the_daemon() -> None:
    bad = [
        str(i)
        for module, found in all_imports().items()
        if top(module) == "coffer_upstream"
        for i in found
        if top(i.target) == "cofferd"
    ]
    assert bad == [], "coffer_upstream may use coffer, never cofferd:\n" + "\n".join(bad)


def test_the_daemon_never_imports_the_reference_upstream() -> None:
    # The .deb does not ship coffer_upstream.
    bad = [
        str(i)
        for module, found in all_imports().items()
        if top(module) == "cofferd"
        for i in found
        if top(i.target) == "coffer_upstream"
    ]
    assert bad == [], "\n".join(bad)


def test_no_import_cycle() -> None:
    graph = {
        module: sorted({i.target for i in found if i.target in MODULES and i.target != module})
        for module, found in all_imports().items()
    }
    cycles = [frozenset(c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == [], "import cycles:\n" + "\n".join(
        " -> ".join(one_cycle(graph, c)) for c in cycles
    )


def strongly_connected(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def one_cycle(graph: Mapping[str, list[str]], component: frozenset[str]) -> list[str]:
    """A path through ``component`` that ends where it starts, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in graph[node]:
            if nxt == start:
                return [*paths[node], start]
            if nxt in component and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")


def test_tarjan_finds_cycles_and_only_cycles() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": []}
    found = sorted(strongly_connected(graph))
    assert found == [["a", "b", "c"], ["d", "e"], ["f"]]
    assert one_cycle(graph, frozenset({"a", "b", "c"})) == ["a", "b", "c", "a"]
