"""`cascade report`: cost, savings, funnel, latency, reliability, confidence, per day.

Terminal tables, JSON, CSV, or one self-contained HTML page; for a job, a
pipeline, a time range, a label; or two jobs side by side (``--compare``).
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from cascade.cliutil import app, check_format, ensure_schema, fail, find_job, out, setup

FORMATS = ("table", "json", "csv")


def build_report(session: Any, job: Any, scope: Any, prices: Any) -> dict[str, Any]:
    """The full report dict: the headline keys, then the analytics sections.

    For a whole job the headline keys come from ``models.reports`` (the
    ``report_tiers`` view), exactly as before; with an item-level filter or no
    single job, from the scoped analytics queries.
    """
    from cascade.cli_review import add_reviews
    from cascade.render import job_report
    from cascade.render_sections import Sections, add_sections
    from models import analytics as an
    from models.reports import served_by_fake, tier_rows

    an.for_reports(session)
    funnel = an.funnel(session, scope)
    if job is not None and not scope.item_level and scope.pipeline is None:
        report = job_report(job, an.job_totals(session, job.id), tier_rows(session, job.id))
    else:
        totals = an.totals(session, scope)
        report = job_report(job, totals, an.tier_rows(funnel, totals.job_id))
    sections = Sections(
        scope=scope,
        funnel=funnel,
        cost=an.cost(session, scope),
        e2e=an.end_to_end(session, scope),
        rel=an.reliability(session, scope),
        conf=an.confidence(session, scope),
        agree=an.agreement(session, scope),
        daily=an.daily(session, scope),
    )
    report = add_sections(report, sections, prices)
    add_calibration(report, an.calibration_spend(session, scope))
    add_reviews(report, session, job)
    from cascade.render_cache import add_cache_sections
    from models.cache_report import cache_by_tier, reuse_summary

    add_cache_sections(report, cache_by_tier(session, scope), reuse_summary(session, scope), prices)
    report["offline"] = served_by_fake(session, tuple(scope.job_ids))
    return report


def add_calibration(report: dict[str, Any], cal: Any) -> None:
    """Shadow samples' spend: beside the items' cost, never inside it."""
    from cascade.render import usd_text

    report["cost"]["calibration_usd"] = usd_text(cal.cost_nanos)
    report["calibration"] = {
        "samples": cal.samples,
        "items": cal.items,
        "cost_usd": usd_text(cal.cost_nanos),
        "answered": cal.answered,
        "agreed_with_final": cal.agreed,
    }


def _prices() -> Any:
    from common.settings import get_settings
    from workers.pricing import PriceTable

    try:
        return PriceTable.load(get_settings().prices_file)
    except Exception:  # a broken prices file must not stop a report: no cache savings then
        return None


def _scope_text(scope: Any, job_name: str | None = None) -> str:
    parts = [] if job_name is None else [f"job {job_name}"]
    if scope.pipeline:
        parts.append(f"pipeline {scope.pipeline}")
    if scope.label:
        parts.append(f"label {scope.label}")
    if scope.since or scope.until:
        parts.append(f"{scope.since or '…'} to {scope.until or '…'}")
    return ", ".join(parts) or "all jobs"


def print_job_report(
    ref: str | None,
    fmt: str,
    *,
    full: bool = False,
    pipeline: str | None = None,
    since: date | None = None,
    until: date | None = None,
    label: str | None = None,
    html: Path | None = None,
) -> None:
    """Print one report. ``full=False`` (after a submit) prints only the tier table."""
    from cascade.cli_review import print_reviews
    from cascade.render import print_report
    from cascade.render_csv import write_report_csv
    from cascade.render_text import print_sections
    from models.analytics import Scope
    from tasks.runtime import get_runtime

    rt = get_runtime()
    if ref is None and label is None and rt.settings.embedded:
        # No beat in the embedded runtime: bring the daily rollup up to date here,
        # so the per-day section reads it rather than aggregating every attempt.
        from models.rollup import refresh

        refresh(rt.sessions)
    with rt.sessions() as session:
        job = find_job(session, ref) if ref is not None else None
        scope = Scope(
            job_ids=() if job is None else (int(job.id),),
            pipeline=pipeline,
            since=since,
            until=until,
            label=label,
        )
        report = build_report(session, job, scope, _prices())
        report["scope_text"] = _scope_text(scope, None if job is None else str(job.name))
    if html is not None:
        from cascade.report_html import render_html

        html.write_text(render_html(report), encoding="utf-8")
        out.print(f"wrote {html}")
        return
    if fmt == "json":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif fmt == "csv":
        write_report_csv(report)
    else:
        print_report(out, report)
        print_reviews(out, report)
        if full:
            from cascade.render_cache import print_cache_sections

            print_sections(out, report)
            print_cache_sections(out, report)


def print_compare(ref_a: str, ref_b: str, fmt: str) -> None:
    from cascade.render_csv import compare_report
    from cascade.render_text import print_compare
    from models.analytics import Scope
    from tasks.runtime import get_runtime

    prices = _prices()
    with get_runtime().sessions() as session:
        reports = []
        for ref in (ref_a, ref_b):
            job = find_job(session, ref)
            reports.append(build_report(session, job, Scope(job_ids=(int(job.id),)), prices))
    if fmt == "json":
        sys.stdout.write(json.dumps(compare_report(*reports), indent=2) + "\n")
    else:
        print_compare(out, *reports)


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise fail(f"{option} must be a date, YYYY-MM-DD (got {value!r})") from None


@app.command()
def report(
    job: Annotated[
        str | None, typer.Option("--job", "-j", help="job id or name (default: latest)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv")] = "table",
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", help="only jobs of this pipeline")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="UTC day YYYY-MM-DD, inclusive")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="UTC day YYYY-MM-DD, inclusive")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="only items with this label")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="write one self-contained HTML page here")
    ] = None,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option("--compare", help="two jobs side by side: --compare JOB_A JOB_B"),
    ] = None,
) -> None:
    """Cost, savings, funnel, latency, reliability and confidence of a job or a scope."""
    setup()
    check_format(fmt, *FORMATS)
    since_day, until_day = _day(since, "--since"), _day(until, "--until")
    if since_day and until_day and since_day > until_day:
        raise fail("--since is after --until")
    ensure_schema()
    if compare is not None:
        if fmt == "csv" or html is not None:
            raise fail("--compare prints a table or json")
        print_compare(compare[0], compare[1], fmt)
        return
    filtered = any(x is not None for x in (pipeline, since_day, until_day, label))
    if job is None and not filtered:
        from models.repo import list_jobs
        from tasks.runtime import get_runtime

        with get_runtime().sessions() as session:
            latest = list_jobs(session, limit=1)
        if not latest:
            raise fail("there are no jobs yet: run `cascade submit FILE --pipeline P.toml`")
        job = str(latest[0].id)
    print_job_report(
        job,
        fmt,
        full=True,
        pipeline=pipeline,
        since=since_day,
        until=until_day,
        label=label,
        html=html,
    )
