"""The package's shape is a contract with its readers: concerns in data-path order, each
importing only from concerns before it, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import camtrap

ROOT = Path(camtrap.__file__).parent

# Earlier layers never import later ones. Top-level wiring modules come last.
LAYERS = [
    {"camtrap", "camtrap.timeutil", "camtrap.status"},
    {"camtrap.config", "camtrap.logs"},
    {"camtrap.video"},
    {"camtrap.motion"},
    {"camtrap.inference"},
    {"camtrap.visits"},
    {"camtrap.storage"},
    {"camtrap.comms"},
    {"camtrap.reports"},
    {"camtrap.schedule"},
    {"camtrap.web"},
    {"camtrap.systemd", "camtrap.camera", "camtrap.replay", "camtrap.sink", "camtrap.monitor"},
    {"camtrap.reload", "camtrap.service", "camtrap.tools"},
    {"camtrap.cli", "camtrap.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def concern(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def layer_of(module: str) -> int:
    name = concern(module)
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its concern to LAYERS")


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("camtrap"):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("camtrap")}
        graph[module_name(path)] = found
    return graph


def test_every_import_points_back_along_the_data_path():
    wrong = []
    for mod, deps in sorted(imports().items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(mod):
                wrong.append(f"{mod} imports {dep}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = imports()
    seen: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(mod: str, stack: list[str]) -> None:
        seen[mod] = 1
        for dep in graph.get(mod, ()):
            if seen.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, mod, dep]))
            if dep not in seen:
                visit(dep, [*stack, mod])
        seen[mod] = 2

    for mod in sorted(graph):
        if mod not in seen:
            visit(mod, [])


def test_no_module_is_too_long_to_read():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600]
    assert not long, long
