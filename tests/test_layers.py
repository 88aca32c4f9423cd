"""The package is a map of its layers: each folder imports only from the folders below it,
nothing imports in a circle, no file grows past 600 lines, and README's Layout names every
module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import REPO

SRC = REPO / "src" / "sr_lightning"
# bottom to top: the protocol core, models, data, the run folder, training, config, analysis,
# the benchmark harness, the command-line entry points
LAYERS = ("core", "models", "data", "runs", "training", "config", "analysis", "bench", "cli")
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The sr_lightning modules ``path`` imports, anywhere in the file (absolute names)."""
    out = set()
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if base.startswith("sr_lightning"):
                for alias in node.names:  # `from pkg import module` names a module
                    sub = f"{base}.{alias.name}"
                    out.add(
                        sub
                        if (SRC.parent / sub.replace(".", "/")).exists()
                        or (SRC.parent / (sub.replace(".", "/") + ".py")).exists()
                        else base
                    )
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("sr_lightning")}
    return out


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_import_goes_down_a_layer_or_stays_in_its_own():
    upward = []
    for path in sources():
        own = layer(module_name(path))
        if own is None:  # the package's __init__: registers the config resolvers
            continue
        for target in imported(path):
            other = layer(target)
            if other is not None and other > own:
                upward.append(f"{module_name(path)} imports {target}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = {module_name(p): {m for m in imported(p) if m != module_name(p)} for p in sources()}
    modules = set(graph)
    graph = {m: {t for t in ts if t in modules} for m, ts in graph.items()}
    # a package imports its own modules (re-exports); a cycle through an __init__ is not one
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    seen: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if seen.get(t) == 1:
                circles.append(stack[stack.index(t) :] + [t])
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_top_of_the_package_holds_folders_and_at_most_three_modules():
    loose = [p.name for p in SRC.glob("*.py")]
    assert len(loose) <= 3, loose
    folders = sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert set(folders) == set(LAYERS), folders


def test_no_source_file_is_over_600_lines():
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in sources()}
    assert not {m: n for m, n in sizes.items() if n > MAX_LINES}


def layout_entries() -> dict[str, str]:
    """README's Layout block: ``<folder>/`` -> the text of its entry (continuation lines too)."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("## Layout") :].split("```")[1]
    entries: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        m = re.match(r"^  (\w+)/(.*)$", line)
        if m:
            current = m[1]
            entries[current] = m[2]
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def test_readme_layout_has_one_entry_per_folder_naming_every_module():
    entries = layout_entries()
    assert set(entries) == set(LAYERS), sorted(entries)
    missing = [
        f"{path.parent.name}/{path.name}"
        for path in sources()
        if path.name != "__init__.py"
        and path.parent != SRC
        and not re.search(rf"\b{path.stem}\b", entries[path.relative_to(SRC).parts[0]])
    ]
    assert not missing, f"README's Layout does not name: {missing}"
