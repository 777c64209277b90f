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

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Each package of the tree and the directory that holds it.
PACKAGES = {
    "coffer": REPO / "client",
    "cofferd": REPO / "daemon",
    "coffer_upstream": REPO / "upstream",
}


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


#: The layers of cofferd (docs/architecture.md), from the bottom: a module may
#: import from its own layer and the layers below, never from one above. Each
#: layer is a list of module names and packages (a package: every module in it).
COFFERD_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "cofferd",
            "cofferd.models",
            "cofferd.errors",
            "cofferd.names",
            "cofferd.settings",
            "cofferd.notify",
            "cofferd.foreign",
        ),
    ),
    ("binary_split", ("cofferd.binary_split",)),
    # The signed release and the owner's and publisher's tools: python-tuf
    # only; resources/ computes a release as it uploads. (The device's side of
    # trust/ sits above resources/, below.)
    (
        "releases and signing",
        (
            "cofferd.trust.release",
            "cofferd.trust.keys",
            "cofferd.trust.owner",
            "cofferd.trust.publish",
        ),
    ),
    ("observe", ("cofferd.observe",)),
    ("resources", ("cofferd.resources",)),
    ("trust", ("cofferd.trust",)),
    ("unlock and field", ("cofferd.unlock", "cofferd.docker_engine", "cofferd.field")),
    ("rpc", ("cofferd.rpc",)),
    ("process", ("cofferd.app", "cofferd.main", "cofferd.__main__", "cofferd.tools")),
)
#: Inside ``rpc/``, from the bottom, the same rule: the dispatch machinery, the
#: transport that runs it, the methods, the table that gathers them.
RPC_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dispatch", ("cofferd.rpc", "cofferd.rpc.dispatch")),
    ("transport", ("cofferd.rpc.transport",)),
    ("methods", ("cofferd.rpc.methods",)),
    ("table", ("cofferd.rpc.table",)),
)


def layer_of(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...]) -> int:
    """The index of the layer ``module`` belongs to (the longest matching entry)."""
    best, best_len = -1, -1
    for index, (_, members) in enumerate(layers):
        for member in members:
            is_in = module == member or (
                module.startswith(member + ".")
                and member != layers[0][1][0]  # the scope's root: its __init__ alone
                and MODULES[member].name == "__init__.py"
            )
            if is_in and len(member) > best_len:
                best, best_len = index, len(member)
    if best < 0:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md")
    return best


def layering_violations(layers: tuple[tuple[str, tuple[str, ...]], ...], scope: str) -> list[str]:
    bad = []
    for module, found in all_imports().items():
        if not (module == scope or module.startswith(scope + ".")):
            continue
        own = layer_of(module, layers)
        for i in found:
            if i.target not in MODULES or not i.target.startswith(scope):
                continue
            theirs = layer_of(i.target, layers)
            if theirs > own:
                bad.append(f"{i} ({layers[own][0]} may not import {layers[theirs][0]})")
    return bad


def test_every_cofferd_module_is_in_a_layer() -> None:
    for module in MODULES:
        if top(module) == "cofferd":
            layer_of(module, COFFERD_LAYERS)
            if module.startswith("cofferd.rpc"):
                layer_of(module, RPC_LAYERS)


def test_cofferd_layers_import_only_downwards() -> None:
    bad = layering_violations(COFFERD_LAYERS, "cofferd")
    assert bad == [], "\n".join(bad)


def test_observe_is_pure_bookkeeping() -> None:
    # It imports nothing of cofferd but itself (and the base layer's nothing).
    bad = [
        str(i)
        for module, found in all_imports().items()
        if module.startswith("cofferd.observe")
        for i in found
        if top(i.target) == "cofferd" and not i.target.startswith("cofferd.observe")
    ]
    assert bad == [], "\n".join(bad)


def test_rpc_layers_import_only_downwards_and_no_method_imports_a_sibling() -> None:
    bad = layering_violations(RPC_LAYERS, "cofferd.rpc")
    bad += [
        str(i)
        for module, found in all_imports().items()
        if module.startswith("cofferd.rpc.methods.")
        for i in found
        if i.target.startswith("cofferd.rpc.methods.") and i.target != module
    ]
    assert bad == [], "\n".join(bad)


def test_the_layer_check_catches_an_upward_import() -> None:
    # The checks above are only as good as layer_of: an import of rpc from
    # resources, or of a method from the dispatcher, must be caught.
    assert layer_of("cofferd.resources.service", COFFERD_LAYERS) < layer_of(
        "cofferd.rpc.table", COFFERD_LAYERS
    )
    assert layer_of("cofferd.rpc.dispatch.dispatcher", RPC_LAYERS) < layer_of(
        "cofferd.rpc.methods.cache", RPC_LAYERS
    )
    assert layer_of("cofferd", COFFERD_LAYERS) == 0
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("cofferd.rpc.stray", RPC_LAYERS)
    assert layer_of("cofferd.tools.archive_cli", COFFERD_LAYERS) == len(COFFERD_LAYERS) - 1


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
