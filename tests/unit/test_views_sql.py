"""The view SQL frozen in the migrations must equal models/views.py (and views_daily.py).

A revision copies the view SQL rather than importing it (a migration is frozen
in time). This test takes, for each view, the newest revision file (files are
named by date, so name order is history order) that defines its constant, and
asserts the copy equals the current definition: change a view in models/views.py
without a migration that re-creates it, and this fails.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

import migrations
from models import views, views_daily

VERSIONS = Path(migrations.__file__).parent / "versions"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _revisions() -> list[ModuleType]:
    files = sorted(p for p in VERSIONS.glob("*.py") if p.name != "__init__.py")
    assert files, f"no revision files in {VERSIONS}"
    return [_load(p) for p in files]


@pytest.mark.parametrize(
    ("constant", "name"),
    [("REPORT_ITEMS_SQL", views.REPORT_ITEMS), ("REPORT_TIERS_SQL", views.REPORT_TIERS)],
)
def test_newest_revision_view_sql_equals_models_views(constant: str, name: str) -> None:
    defining = [m for m in _revisions() if hasattr(m, constant)]
    assert defining, f"no revision defines {constant}"
    frozen = getattr(defining[-1], constant)
    current = getattr(views, constant)

    assert frozen == current
    assert current.startswith(f"CREATE VIEW {name} AS\n")


def test_views_lists_every_view() -> None:
    assert views.VIEWS == (
        (views.REPORT_ITEMS, views.REPORT_ITEMS_SQL),
        (views.REPORT_TIERS, views.REPORT_TIERS_SQL),
    )


def test_revision_file_names_are_dated() -> None:
    for path in VERSIONS.glob("*.py"):
        if path.name != "__init__.py":
            assert path.name[:11].replace("_", "").isdigit(), path.name


def test_newest_revision_report_daily_equals_models_views() -> None:
    """report_daily is per dialect: the newest revision's dict of texts must match."""
    defining = [m for m in _revisions() if hasattr(m, "REPORT_DAILY_SQL")]
    assert defining, "no revision defines REPORT_DAILY_SQL"

    assert defining[-1].REPORT_DAILY_SQL == views_daily.REPORT_DAILY_SQL
    for sql in views_daily.REPORT_DAILY_SQL.values():
        assert sql.startswith(f"CREATE VIEW {views_daily.REPORT_DAILY} AS\n")
        assert "rollup_daily" in sql and "role <> 'shadow'" in sql
    with_function = [m for m in _revisions() if hasattr(m, "ROLLUP_LAST_ID_SQL")]
    assert with_function, "no revision defines ROLLUP_LAST_ID_SQL"
    assert with_function[-1].ROLLUP_LAST_ID_SQL == views_daily.ROLLUP_LAST_ID_SQL


def test_report_daily_counts_calls_as_report_tiers_does() -> None:
    """A step that sent no request, and a reused decision, are no call in either view."""
    tiers = views.REPORT_TIERS_SQL
    for sql in views_daily.REPORT_DAILY_SQL.values():
        assert f"CASE WHEN {views.CALL}\n            THEN 1 ELSE 0 END AS is_call" in sql
        assert "SUM(s.is_call) AS calls" in sql
        assert "WHERE s.is_call = 1" in sql  # the p95 is over requests sent only
    assert f"CASE WHEN {views.CALL}\n" in tiers
