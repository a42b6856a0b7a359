"""No module over 400 lines and no function over 60 in the application code (issue 16).

Counted as the file's lines, and a function from its ``def`` line to its last line
(decorators aside, nested functions counted in their parent too). Migrations are
left out: a revision is frozen in time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cascade", "workers", "tasks", "models", "common")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sizes() -> tuple[dict[str, int], dict[str, int]]:
    """(module -> lines) and (module:function -> lines), over the limits only."""
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            text = path.read_text(encoding="utf-8")
            if len(text.splitlines()) > MAX_MODULE_LINES:
                modules[name] = len(text.splitlines())
            functions |= long_functions(name, text)
    return modules, functions


def long_functions(name: str, text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out[f"{name}:{node.name}"] = lines
    return out


def test_modules_and_functions_within_the_limits() -> None:
    modules, functions = sizes()
    over = modules | functions
    assert not over, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function: {over}"
    )


def test_a_long_function_is_seen() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    text = f"def short():\n    return 1\n\n\nasync def long():\n{body}\n"
    assert long_functions("m.py", text) == {"m.py:long": 61}
