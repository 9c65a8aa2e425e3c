"""The import rules of docs/ARCHITECTURE.md, checked on the source: imports point down the
layers, the client never imports the server, and no module imports itself in a cycle.

Every ``import`` counts, those inside functions included (a deferred import is still a
dependency). Those under ``if TYPE_CHECKING:`` are left out of the layer rule but count for
cycles: two modules that need each other's types are one piece split in two.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import modelgarden

ROOT = Path(modelgarden.__file__).parent

#: Each part of the package (a top-level module or subpackage) by layer, lowest first. A
#: module may import its own layer and the ones below, never one above.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"__init__", "errors", "types", "wire", "durations", "hosts", "breaker",
                    "genai", "tasks", "db", "config"}),
    ("building blocks", {"model_options", "templates", "upstream_http", "resources",
                         "recommend", "resilience"}),
    ("services", {"lifecycle", "store", "engine", "translate", "telemetry", "security",
                  "memory_release"}),
    ("routing", {"gateway", "backends"}),
    ("edge", {"api", "console", "workers"}),
    ("entry points", {"server", "cli", "doctor", "bench", "runner", "__main__"}),
]  # fmt: skip
#: The client is installed with the server but talks to it only over HTTP: it may use the
#: foundation's dependency-free parts and nothing else of the server's.
CLIENT_MAY_USE = {"__init__", "errors", "types", "wire", "durations", "hosts", "breaker", "genai"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    """``modelgarden.api.app`` -> ``api``; ``modelgarden`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _under_type_checking(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return skip


def imports(path: Path, known: set[str], typing_too: bool = False) -> Iterator[str]:
    """The package's modules that ``path`` imports (the module itself for ``from m import
    name``, or ``m.name`` when that is a submodule); with ``typing_too``, those imported
    for annotations only (under ``if TYPE_CHECKING:``) as well."""
    tree = ast.parse(path.read_text())
    skip = set() if typing_too else _under_type_checking(tree)
    here = _module(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("modelgarden"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if not base.startswith("modelgarden"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in known else base


def graph(typing_too: bool = False) -> dict[str, set[str]]:
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    known = set(files)
    return {m: set(imports(p, known, typing_too)) - {m} for m, p in files.items()}


def layer_of(part: str) -> int:
    for rank, (_, parts) in enumerate(LAYERS):
        if part in parts:
            return rank
    raise AssertionError(f"modelgarden.{part} is in no layer: add it to LAYERS")


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(edges.items()):
        if _part(module) == "client":
            continue
        for target in sorted(targets):
            if _part(target) == "client":
                continue  # the CLI is the client's user
            low, high = layer_of(_part(module)), layer_of(_part(target))
            if high > low:
                found.append(f"{module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]})")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once (Tarjan's strongly connected components of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    for module in graph():
        part = _part(module)
        if part != "client":
            layer_of(part)


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(graph()) == []


def test_the_client_uses_nothing_of_the_server() -> None:
    found = [
        f"{module} imports {target}"
        for module, targets in sorted(graph().items())
        if _part(module) == "client"
        for target in sorted(targets)
        if _part(target) not in CLIENT_MAY_USE | {"client"}
    ]
    assert found == []


def test_no_module_imports_itself_through_others() -> None:
    """Imports for annotations count here too: two modules that need each other's types are
    one piece split in two, and the shared part belongs a layer down."""
    assert cycles(graph(typing_too=True)) == []


def test_the_checks_see_a_violation() -> None:
    """The checks themselves: an upward import and a cycle, on a made-up graph."""
    made_up = {"modelgarden.store.x": {"modelgarden.api.app"}, "modelgarden.api.app": set()}
    assert upward_imports(made_up) == [
        "modelgarden.store.x (services) imports modelgarden.api.app (edge)"
    ]
    loop = {"modelgarden.a": {"modelgarden.b"}, "modelgarden.b": {"modelgarden.a"}}
    assert cycles(loop) == [["modelgarden.a", "modelgarden.b"]]


def test_benchmarks_and_the_shared_servers_never_import_the_tests() -> None:
    """``tests`` may import ``benchmarks`` (to run its scenarios) and ``loopback``; neither
    of those imports ``tests``, so the two never import each other."""
    repo = ROOT.parent.parent
    found = []
    for folder in ("benchmarks", "loopback"):
        for path in sorted((repo / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                found += [f"{path.relative_to(repo)} imports {n}" for n in names
                          if n == "tests" or n.startswith("tests.")]  # fmt: skip
    assert found == []
