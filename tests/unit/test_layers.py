"""The package's layers point down only: each module imports only its own layer and the layers it may (README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "tabfleetd"

# Layer (the folder under tabfleetd/, "" for the root) -> the layers its modules may import, besides their own.
# The root's modules (errors, protocol, states, journal, logthrottle) are what every layer shares.
MAY_IMPORT: dict[str, set[str]] = {
    "": set(),
    "files": {""},
    "demo": {""},
    "sites": {"", "files"},
    "settings": {"", "files", "sites"},
    "fleet": {"", "files", "sites", "settings"},
    "store": {"", "files", "settings"},
    "schedule": {"", "files", "settings", "fleet", "store"},
    "control": {"", "files", "demo", "sites", "settings", "fleet", "store", "schedule"},
    "web": {"", "files", "demo", "sites", "settings", "fleet", "store", "schedule", "control"},
    "service": {"", "files", "demo", "sites", "settings", "fleet", "store", "schedule", "control", "web"},
}
ENTRY_POINT = "tabfleetd.__main__"  # `python -m tabfleetd` runs the command line, so it sits above everything


def module_name(path: Path) -> str:
    parts = ["tabfleetd", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every tabfleetd module or package the file imports, at the top, in functions or under TYPE_CHECKING."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source == "tabfleetd" or source.startswith("tabfleetd."):
                found |= {f"{source}.{alias.name}" for alias in node.names} | {source}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "tabfleetd"}
    return found


def layer_of(name: str) -> str:
    """The layer a dotted name lives in: the folder right under tabfleetd/, or the root."""
    parts = name.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in MAY_IMPORT else ""


def layer_imports() -> dict[str, set[tuple[str, str]]]:
    """Layer -> the (module, name) pairs through which it imports another layer."""
    edges: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        if here == ENTRY_POINT:
            continue
        for name in imported(path):
            if layer_of(name) != layer_of(here):
                edges.setdefault(layer_of(here), set()).add((here, name))
    return edges


def test_the_folders_are_the_layers_in_the_table() -> None:
    """Every folder of the package is a layer in the table, and every layer in the table is a folder."""
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(MAY_IMPORT) - {""}


def test_each_layer_package_says_what_it_owns_and_may_import() -> None:
    """Each layer's __init__.py is a docstring and nothing else (so importing a pure module loads nothing more)."""
    for layer in set(MAY_IMPORT) - {""}:
        body = ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr) and "may import" in " ".join(body[0].value.value.lower().split()), layer


def test_no_layer_imports_one_above_it() -> None:
    """No module imports a layer its own layer may not import (the table above)."""
    wrong = sorted(f"{module} imports {name}" for layer, pairs in layer_imports().items() for module, name in pairs
                   if layer_of(name) not in MAY_IMPORT[layer])
    assert wrong == []


def test_layers_import_each_other_without_circles() -> None:
    """The graph of which layer imports which has no cycle."""
    graph = {layer: {layer_of(name) for _, name in pairs} for layer, pairs in layer_imports().items()}
    done: set[str] = set()

    def visit(layer: str, path: tuple[str, ...]) -> None:
        assert layer not in path, f"layers import in a circle: {' -> '.join((*path, layer))}"
        if layer not in done:
            for lower in graph.get(layer, ()):
                visit(lower, (*path, layer))
            done.add(layer)

    for layer in graph:
        visit(layer, ())


def test_the_allowed_directions_themselves_point_down() -> None:
    """The table has no two layers allowed to import each other, directly or round a loop."""
    def below(layer: str) -> set[str]:
        out = set(MAY_IMPORT[layer])
        for lower in MAY_IMPORT[layer]:
            out |= below(lower)
        return out

    assert all(layer not in below(layer) for layer in MAY_IMPORT)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """A store module importing the scheduler is reported, so the check above can fail."""
    fake = PACKAGE / "store" / "_layers_probe.py"
    fake.write_text("from ..schedule.scheduler import Scheduler\n", encoding="utf-8")
    try:
        pairs = layer_imports()["store"]
    finally:
        fake.unlink()
    assert ("tabfleetd.store._layers_probe", "tabfleetd.schedule.scheduler.Scheduler") in pairs
    assert "schedule" not in MAY_IMPORT["store"]
