"""The package's boundaries, read from its source with `ast` (every import counts: those inside
functions and under TYPE_CHECKING too): no import cycle between modules, no import from a higher
layer, few loose modules at the package root, no private name imported from another package.
docs/architecture.md describes the same layers for people."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.server import REPO

PACKAGE = REPO / "lea_local"

# Bottom to top. A unit is a subpackage of lea_local or a module at its root ("__init__" is the
# package's own). A unit may import from the layers below its own, never from a higher one.
LAYERS: list[set[str]] = [
    {"__init__", "settings", "locales"},  # configuration: what the environment and LEA_LOCALE select
    {"runtime"},  # queues and admission, cancellation, remote HTTP, metrics, logs, hardware
    {"catalog", "store", "llm", "asr", "tts", "knowledge"},  # models, stores, engines
    {"pipeline"},  # turns: engines and stores joined
    {"services"},  # the composition root: what lives as long as the server
    {"api"},  # HTTP only
    {"cli"},
    {"__main__"},
]

# Imports between units of one layer: only these, each for a reason the code has today (they
# form no cycle).
SIBLING_IMPORTS = {
    ("knowledge", "store"): "the knowledge base lives in the conversation database (outages, migrations)",
    ("knowledge", "llm"): "grounding adds the agency's passages to the chat messages",
    ("tts", "store"): "the database audio store shares the database's outage classification",
    ("tts", "catalog"): "the voices /v1/audio/speech offers are the catalog's installed Piper voices",
}

# Benchmark and test tooling, off the request path: it may import anything, and nothing imports
# it but the CLI (`lea-local bench`).
TOOLS = "tools"
TOOLS_IMPORTERS = {"cli"}

# What may sit loose at the package root; everything else belongs in a subpackage.
ROOT_MODULES = {"__init__", "__main__", "cli", "settings", "services", "locales"}


@dataclass(frozen=True)
class Import:
    source: str
    """The importing module, e.g. lea_local.api.chat."""
    target: str
    """The imported module (a name imported from a module resolves to that module)."""
    names: tuple[str, ...]
    """For `from target import a, b`: a, b."""
    where: str
    """path:line, for the messages."""


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(package: Path) -> list[Import]:
    """Every import of a module of the package by a module of the package."""
    known = modules(package)
    root = package.name

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for source, path in known.items():
        own_package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            where = f"{path.relative_to(package.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                wanted = [(alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from package import module` imports that module; `from module import name`, the module.
                wanted = []
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    wanted.append((submodule, ()) if submodule in known else (base, (alias.name,)))
            else:
                continue
            for name, names in wanted:
                if name == root or name.startswith(root + "."):
                    target = resolve(name)
                    if target is not None and target != source:
                        found.append(Import(source, target, names, where))
    return found


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(unit: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if unit in layer), None)


def package_of(module: str, known: dict[str, Path]) -> str:
    return module if known[module].name == "__init__.py" else module.rpartition(".")[0]


def cycles(found: list[Import]) -> list[list[str]]:
    """Each import cycle (a strongly connected group of modules), as one path round it."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_round(graph, group) for group in groups]


def _round(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return sorted(group)


def cycle_problems(package: Path) -> list[str]:
    found = imports(package)
    problems = []
    for path in cycles(found):
        steps = []
        for source, target in zip(path, path[1:], strict=False):
            where = next(imp.where for imp in found if imp.source == source and imp.target == target)
            steps.append(f"  {source} imports {target} ({where})")
        problems.append("import cycle " + " -> ".join(path) + ":\n" + "\n".join(steps))
    return problems


def layer_problems(package: Path) -> list[str]:
    problems = []
    units = {unit_of(module) for module in modules(package)}
    for unit in sorted(units - {TOOLS}):
        if layer_of(unit) is None:
            problems.append(f"lea_local.{unit} is in no layer: add it to LAYERS in {Path(__file__).name}")
    for imp in imports(package):
        source, target = unit_of(imp.source), unit_of(imp.target)
        if source == target or source == TOOLS:
            continue
        if target == TOOLS:
            if source not in TOOLS_IMPORTERS:
                problems.append(f"{imp.where}: {imp.source} imports {imp.target}: only the CLI may use the tools")
            continue
        low, high = layer_of(target), layer_of(source)
        if low is None or high is None or low < high:
            continue
        if low == high and (source, target) in SIBLING_IMPORTS:
            continue
        if low > high:
            why = f"{target} is in a higher layer than {source}"
        else:
            why = f"{source} and {target} share a layer, and ({source!r}, {target!r}) is not in SIBLING_IMPORTS"
        problems.append(f"{imp.where}: {imp.source} imports {imp.target}: {why}")
    return problems


def root_problems(package: Path) -> list[str]:
    loose = {path.stem for path in package.glob("*.py")}
    return [
        f"lea_local/{name}.py sits loose at the package root: move it into the subpackage of its concern"
        for name in sorted(loose - ROOT_MODULES)
    ]


def private_problems(package: Path) -> list[str]:
    known = modules(package)
    problems = []
    for imp in imports(package):
        private = [name for name in imp.names if name.startswith("_") and not name.startswith("__")]
        if private and package_of(imp.source, known) != package_of(imp.target, known):
            problems.append(
                f"{imp.where}: {imp.source} imports the private {', '.join(private)} of {imp.target} "
                "(another package): make it public or keep it in its package"
            )
    return problems


def _report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(problems)


def test_no_import_cycle() -> None:
    problems = cycle_problems(PACKAGE)
    assert not problems, _report(problems)


def test_no_import_from_a_higher_layer() -> None:
    problems = layer_problems(PACKAGE)
    assert not problems, _report(problems)


def test_few_loose_modules_at_the_root() -> None:
    problems = root_problems(PACKAGE)
    assert not problems, _report(problems)


def test_no_private_name_imported_from_another_package() -> None:
    problems = private_problems(PACKAGE)
    assert not problems, _report(problems)


def test_sibling_imports_form_no_cycle() -> None:
    pairs = set(SIBLING_IMPORTS)
    assert not {(b, a) for a, b in pairs} & pairs


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checks_catch_planted_violations(tmp_path: Path) -> None:
    package = tmp_path / "lea_local"
    _write(
        tmp_path,
        {
            "lea_local/__init__.py": "",
            "lea_local/settings.py": "from lea_local.api.app import create_app\n",
            "lea_local/helpers.py": "",
            "lea_local/api/__init__.py": "",
            "lea_local/api/app.py": "def create_app():\n    from lea_local.tools.bench import main\n",
            "lea_local/store/__init__.py": "",
            "lea_local/store/a.py": "from lea_local.store.b import thing\n",
            "lea_local/store/b.py": "def thing():\n    from lea_local.store import a\n",
            "lea_local/llm/__init__.py": "from lea_local.store.a import _private\n",
            "lea_local/tools/__init__.py": "",
            "lea_local/tools/bench.py": "main = None\n",
        },
    )
    assert cycle_problems(package) == [
        "import cycle lea_local.store.a -> lea_local.store.b -> lea_local.store.a:\n"
        "  lea_local.store.a imports lea_local.store.b (lea_local/store/a.py:1)\n"
        "  lea_local.store.b imports lea_local.store.a (lea_local/store/b.py:2)"
    ]
    layers = layer_problems(package)
    assert sorted(layers) == [
        "lea_local.helpers is in no layer: add it to LAYERS in test_architecture.py",
        "lea_local/api/app.py:2: lea_local.api.app imports lea_local.tools.bench: only the CLI may use the tools",
        "lea_local/llm/__init__.py:1: lea_local.llm imports lea_local.store.a: "
        "llm and store share a layer, and ('llm', 'store') is not in SIBLING_IMPORTS",
        "lea_local/settings.py:1: lea_local.settings imports lea_local.api.app: api is in a higher layer than settings",
    ]
    assert root_problems(package) == [
        "lea_local/helpers.py sits loose at the package root: move it into the subpackage of its concern"
    ]
    assert private_problems(package) == [
        "lea_local/llm/__init__.py:1: lea_local.llm imports the private _private of lea_local.store.a "
        "(another package): make it public or keep it in its package"
    ]
