"""Draw the layers of ``causal_wsss`` into docs/architecture.md, from the code itself.

The layers are the import contract of ``pyproject.toml`` (``[tool.importlinter]``, checked by
``make layers``); each module's line is the first sentence of its docstring; the arrows are the
imports between layers that the code really makes (grimp, import-linter's graph). Between the
markers ``<!-- layers:begin -->`` and ``<!-- layers:end -->`` the document holds exactly what
this script prints, and tests/test_layers.py fails when the two differ, so the picture cannot
drift from the code.

    python scripts/architecture.py           # print the generated section
    python scripts/architecture.py --write   # rewrite it in docs/architecture.md
    python scripts/architecture.py --check   # exit 1 (naming the fix) when the document is stale
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import tomllib  # Python 3.11+ (a development script)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin -->", "<!-- layers:end -->"


def layers() -> list[list[str]]:
    """The contract's layers, top first, each a list of module names (relative to the package)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[m.strip() for m in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def summary(module: str) -> str:
    """The first sentence of the module's (or package's) docstring."""
    path = ROOT / "causal_wsss" / module.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return re.split(r"\.\s+(?=[A-Z])", first)[0].rstrip(".").replace("|", "/")


def layer_edges(stack: list[list[str]]) -> set[tuple[int, int]]:
    """(upper layer, lower layer) pairs between which the code imports, from grimp's graph."""
    import grimp

    graph = grimp.build_graph("causal_wsss")
    where = {m: i for i, layer in enumerate(stack) for m in layer}

    def layer_of(name: str) -> int | None:
        parts = name.split(".")[1:]
        return where.get(parts[0]) if parts else None

    edges = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            a, b = layer_of(importer), layer_of(imported)
            if a is not None and b is not None and a != b:
                edges.add((a, b))
    return edges


def section() -> str:
    stack = layers()
    edges = layer_edges(stack)
    # draw only the arrows to the nearest layer each layer uses: the rest follow by transitivity
    lines = ["```mermaid", "flowchart TB"]
    for i, layer in enumerate(stack):
        label = " · ".join(layer)
        lines.append(f'    L{i + 1}["{i + 1}: {label}"]')
    for i in range(len(stack)):
        below = sorted(b for a, b in edges if a == i)
        if below:
            lines.append(f"    L{i + 1} --> L{below[0] + 1}")
    lines += ["```", "", "| layer | module | what it is |", "|---|---|---|"]
    for i, layer in enumerate(stack):
        for module in layer:
            lines.append(f"| {i + 1} | `{module}` | {summary(module)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="rewrite the section in the document")
    p.add_argument("--check", action="store_true", help="exit 1 when the document is stale")
    args = p.parse_args(argv)
    text = section()
    if not (args.write or args.check):
        print(text, end="")
        return 0
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        print(f"{DOC}: markers {BEGIN} / {END} not found", file=sys.stderr)
        return 2
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{text}{END}{tail}"
    if args.check:
        if new != doc:
            print(f"{DOC} is stale: run python scripts/architecture.py --write", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
