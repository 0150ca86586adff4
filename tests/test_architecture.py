"""The package's imports go one way: each module imports only modules of its own
layer or the layers below it, and no two modules import each other, directly or
round a loop. Every import counts: at module level, inside functions, and under
``if TYPE_CHECKING``. The layers are those of docs/architecture.md."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "eventstore"

LAYERS: list[set[str]] = [
    # 0: imports nothing of the package
    {"errors", "_closing", "schema", "_import_summary"},
    # 1: records of the domain
    {"records", "registry", "urls"},
    # 2: encoding, checking, translating errors, engines and catalog questions
    {
        "codec",
        "_validation",
        "_translate",
        "_engines",
        "_lifecycle",
        "_catalog",
        "embedded",
        "_pg_caller",
    },
    # 3: the public interface, what backends speak, the feed, the SQL, the schema's revisions
    {"_backend", "feed", "store", "migrations", "_sql"},
    # 4: the stores and what is built on the interface
    {
        "_base",
        "_memory_transaction",
        "memory",
        "_pg_projections",
        "_listen",
        "_notifier",
        "postgres",
        "projections",
        "repository",
        "erasure",
        "monitoring",
        "roles",
        "bound",
    },
    # 5: operator tools
    {"transfer", "doctor", "verification", "_testdb"},
    # 6: integrations and the command line, and the package's own facade
    {"cli", "pytest_plugin", "integrations", "__init__"},
]


def _unit(module: str) -> str:
    """The layered unit a module belongs to: its first part below the package
    (``transfer`` for ``eventstore.transfer._format``), ``__init__`` for the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module of the package, line) for every import in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "eventstore":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "eventstore":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield (submodule if submodule in MODULES else target), node.lineno


def _layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"eventstore.{unit} is in no layer: add it to LAYERS and to docs")


def _edges() -> dict[str, set[str]]:
    return {
        module: {target for target, _ in _imports(module, path) if target != module}
        for module, path in MODULES.items()
    }


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer_of(_unit(module))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module: str) -> None:
    layer = _layer_of(_unit(module))
    upward = [
        f"line {line}: {target} (layer {_layer_of(_unit(target))})"
        for target, line in _imports(module, MODULES[module])
        if _layer_of(_unit(target)) > layer
    ]
    assert not upward, f"{module} (layer {layer}) imports upward: {upward}"


def test_no_import_cycle() -> None:
    edges = _edges()
    # The package's own __init__ runs before any of its modules; importing a
    # submodule is not an import of the facade, so only explicit names count.
    cycles = [component for component in _strongly_connected(edges) if len(component) > 1]
    assert not cycles, f"import cycles: {cycles}"


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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


def test_the_checker_sees_an_upward_import_and_a_cycle() -> None:
    """The checks above can fail: a made-up upward edge and loop are caught."""
    assert _layer_of("errors") < _layer_of("transfer")
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(c) for c in _strongly_connected(loop) if len(c) > 1] == [["a", "b", "c"]]


def test_both_stores_are_the_one_interface() -> None:
    """Every public method of both stores is declared on EventStore (where its
    contract is written), and both are EventStores at run time too."""
    from eventstore import EventStore, InMemoryEventStore, PostgresEventStore

    declared = {name for name in dir(EventStore) if not name.startswith("_")}
    for store_class in (PostgresEventStore, InMemoryEventStore):
        public = {name for name in dir(store_class) if not name.startswith("_")}
        extra = public - declared - {"from_url"}
        assert not extra, f"{store_class.__name__} has public methods outside EventStore: {extra}"
    assert isinstance(InMemoryEventStore(), EventStore)


def test_a_projection_runner_refuses_a_store_of_another_library() -> None:
    from eventstore import Projection, ProjectionRunner
    from eventstore.errors import ValidationError

    with pytest.raises(ValidationError, match="needs a store of this library"):
        ProjectionRunner(object(), Projection("p", lambda event, connection: None))  # type: ignore[arg-type]
