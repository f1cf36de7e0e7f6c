"""The layout's rules, checked on the source: imports flow banditkit <- laser_adapters <- laser_app without
cycles, no package reaches into another's private names, and modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"banditkit": "banditkit", "adapters": "laser_adapters", "laser_app": "laser_app"}
#: What each package may import from the others (the direction of the layout).
ALLOWED = {"banditkit": set(), "laser_adapters": {"banditkit"}, "laser_app": {"banditkit", "laser_adapters"}}


def modules() -> dict[str, Path]:
    """Module name -> file, for every module of the three packages."""
    out = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [name, *path.relative_to(ROOT / folder).with_suffix("").parts]
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """Every module of the three packages that ``module`` imports anywhere (lazy and type-only imports
    too), with the names it takes from it."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[:len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names = [a.name for a in node.names]
            out.append((base, names))
            out += [(f"{base}.{n}", []) for n in names if f"{base}.{n}" in known]
    return [(m, names) for m, names in out if m in known and m != module]


def test_imports_follow_the_layout_without_cycles() -> None:
    known = modules()
    graph = {m: {d for d, _ in imported(m, p, known)} for m, p in known.items()}
    for m, deps in graph.items():
        outside = {d.split(".")[0] for d in deps} - {m.split(".")[0]}
        assert outside <= ALLOWED[m.split(".")[0]], (m, outside)

    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(d):], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_private_names_across_packages() -> None:
    known = modules()
    for m, path in known.items():
        for dep, names in imported(m, path, known):
            if dep.split(".")[0] == m.split(".")[0]:
                continue
            private = [p for p in dep.split(".")[1:] if p.startswith("_")] + [n for n in names if n.startswith("_")]
            assert not private, (m, dep, private)


def test_modules_stay_small() -> None:
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in modules().items()}
    assert sizes["laser_app.loop"] < 350  # the recipe only
    assert max(sizes.values()) <= 600, max(sizes.items(), key=lambda kv: kv[1])
