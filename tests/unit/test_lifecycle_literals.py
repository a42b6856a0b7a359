"""No status, verdict or outcome spelt as a string outside ``common/lifecycle.py`` (issue 16).

Every string constant in the application code (docstrings aside) that equals a value of
one of the lifecycle's enums is a word the lifecycle owns: code names it through the
enum (``Status.DONE``, ``Verdict.ESCALATE``), so a renamed or added value has one home.
f-string pieces and SQL text are not constants equal to a value, so they pass.

Not scanned: ``migrations/`` (a revision is frozen in time and imports nothing of the
application) and ``cascade/fakeapi/`` (the stand-in for the Anthropic API: its words,
such as a ``refusal`` stop reason or an ``ok`` JSON key, are the API's, not ours).
"""

from __future__ import annotations

import ast
from collections import Counter
from enum import StrEnum
from pathlib import Path

from common import lifecycle

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cascade", "workers", "tasks", "models", "common")
SKIPPED = ("common/lifecycle.py", "cascade/fakeapi/")
ENUMS: tuple[type[StrEnum], ...] = (
    lifecycle.Status,
    lifecycle.JobStatus,
    lifecycle.BatchStatus,
    lifecycle.RunStatus,
    lifecycle.Verdict,
    lifecycle.Outcome,
)  # not Role: "rules" and "local" are also tier kinds and provider names
WORDS = frozenset(str(v) for enum in ENUMS for v in enum)

# (file, word): why that word there is not the lifecycle's. Keep it tiny; an entry no
# longer needed fails the test too.
ALLOWED: dict[tuple[str, str], str] = {
    ("workers/answers.py", "refusal"): "the Anthropic API's stop_reason, compared as it arrives",
    ("workers/pipeline_checks.py", "accept"): "the pipeline file's key (a tier's [accept] table)",
    ("workers/tuning.py", "accept"): "the pipeline file's key, in the TOML tune rewrites",
    ("cascade/cli_review.py", "review"): "the CLI command's name (`cascade review`)",
}


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, word) of each string constant in ``path`` equal to a lifecycle value."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in WORDS
        and id(node) not in docstrings
    )


def found() -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name.startswith(SKIPPED):
                continue
            hits = literals(path)
            if hits:
                out[name] = hits
    return out


def test_no_lifecycle_literal_outside_the_lifecycle_module() -> None:
    hits = found()
    unexpected = [
        (name, n, word) for name, lines in hits.items() for n, word in lines
        if (name, word) not in ALLOWED
    ]  # fmt: skip
    assert not unexpected, "lifecycle words spelt as strings; use the enum:\n" + "\n".join(
        f"  {name}:{n}: {word!r}" for name, n, word in unexpected
    )
    used = {(name, word) for name, lines in hits.items() for _, word in lines}
    stale = sorted(set(ALLOWED) - used)
    assert not stale, "ALLOWED entries no longer needed (delete them): " + repr(stale)


def test_the_scan_sees_a_literal_and_skips_docstrings(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""done"""\n'
        "def f(status):\n"
        '    """failed"""\n'
        '    return status == "escalate" or status in ("pending", "not a status")\n'
    )
    assert literals(module) == [(4, "escalate"), (4, "pending")]


def test_every_enum_value_is_a_word() -> None:
    # the enums' values are what the database stores: distinct within each enum
    for enum in ENUMS:
        assert len({str(v) for v in enum}) == len(enum)
    assert Counter(WORDS)["done"] == 1 and "escalate" in WORDS and "submitting" in WORDS
