"""Backfills: take what is new or changed in a source since its watermark into a job.

A run reads ``since < updated-at <= until`` (``until`` fixed when the run starts),
inserts the items into a job named after the pipeline, the source and ``since`` (so a
run that died half-way and is started again fills the same job and adds nothing
twice), starts the cascade on them, then moves the watermark to ``until``. A run that
finds nothing new records an ``empty`` run and creates no job.

Configured backfills (for Celery beat) live in a TOML file named by
``CASCADE_BACKFILLS_FILE``; see :class:`BackfillConfig`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.lifecycle import Phase, RunStatus
from common.logs import get_logger
from models import batches_repo, repo
from models.repo import NewItem
from models.sources import DbSource, SourceReader
from tasks.app import app, beat_job
from tasks.messages import Message, chunks
from tasks.publish import publish
from tasks.runtime import Runtime, get_runtime
from tasks.submit import CHUNK_LINES, SubmitError, check_models_priced
from workers.backfills import BackfillSpec, find_backfill, with_mode
from workers.intake import EMPTY_TEXT, NO_TEXT, TEXT_NOT_STRING, TEXT_TOO_LONG, read_items
from workers.intake import InputItem as FileItem
from workers.pipeline import ClaudeTier, Pipeline, load_pipeline
from workers.sources import FileSource, is_database_url

log = get_logger("cascade.backfill")


@dataclass(slots=True)
class BackfillResult:
    run_id: int
    status: str  # done | empty
    source: str
    since: datetime | None
    until: datetime | None
    job_id: int | None = None
    job_name: str | None = None
    items_added: int = 0
    items_existing: int = 0
    lines_rejected: int = 0


# (line_no, key, text, meta) or (line_no, reason, raw) for a rejected entry
Entry = tuple[int, str, str, dict[str, Any]] | tuple[int, str, str]


def _db_entries(
    reader: SourceReader, since: datetime | None, until: datetime, max_chars: int
) -> Iterator[Entry]:
    for n, row in enumerate(reader.rows(since, until), start=1):
        raw = f"id={row.key}"
        if row.text is None:
            yield (n, NO_TEXT, raw)
        elif not isinstance(row.text, str):
            yield (n, TEXT_NOT_STRING, raw)
        elif not row.text.strip():
            yield (n, EMPTY_TEXT, raw)
        elif len(row.text) > max_chars:
            yield (n, f"{TEXT_TOO_LONG}: {len(row.text)} > {max_chars}", raw)
        else:
            meta = row.meta | {"updated_at": row.updated_at.isoformat()}
            yield (n, row.key, row.text, meta)


def _file_entries(files: list[Path], max_chars: int) -> Iterator[tuple[str, Entry]]:
    for path in files:
        for e in read_items(path, max_text_chars=max_chars):
            if isinstance(e, FileItem):
                yield str(path), (e.line_no, e.item_id, e.text, e.metadata)
            else:
                yield str(path), (e.line_no, e.reason, e.raw)


def run_backfill(rt: Runtime, spec: BackfillSpec) -> BackfillResult:
    """One run: read what is new since the watermark into a job, start it, move the mark."""
    pipeline = with_mode(load_pipeline(spec.pipeline), spec.mode)
    problems = check_models_priced(pipeline, rt.prices)
    if problems:
        raise SubmitError("; ".join(problems))
    source = _source(spec)
    key = source.key
    with rt.sessions.begin() as session:
        since = spec.since or batches_repo.get_watermark(session, pipeline.name, key)
        mode = spec.mode or ("batch" if _any_batch(pipeline) else "realtime")
        run_id = batches_repo.start_run(
            session, name=spec.name, pipeline=pipeline.name, source=key, mode=mode, since=since
        )
    reader = SourceReader(source) if isinstance(source, DbSource) else None
    try:
        until, entries = _changes(source, reader, since, pipeline.limits.max_text_chars)
        if until is None:
            with rt.sessions.begin() as session:
                batches_repo.finish_run(session, run_id, status=RunStatus.EMPTY)
            log.info("cascade.backfill.nothing_new", source=key, since=since)
            return BackfillResult(run_id, RunStatus.EMPTY, key, since, None)
        result = BackfillResult(run_id, RunStatus.DONE, key, since, until)
        tag = since.strftime("%Y%m%dT%H%M%S.%f") if since else "initial"
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        result.job_name = f"backfill-{pipeline.name}-{digest}-{tag}"
        _ingest(rt, pipeline, result, entries)
        with rt.sessions.begin() as session:
            batches_repo.set_watermark(session, pipeline.name, key, until)
            batches_repo.finish_run(
                session,
                run_id,
                status=RunStatus.DONE,
                job_id=result.job_id,
                until=until,
                items_added=result.items_added,
                lines_rejected=result.lines_rejected,
            )
    except Exception as exc:
        with rt.sessions.begin() as session:
            batches_repo.finish_run(session, run_id, status=RunStatus.FAILED, message=str(exc))
        raise
    finally:
        if reader is not None:
            reader.close()
    log.info("cascade.backfill.started", job_id=result.job_id, source=key,
             items=result.items_added, since=since, until=until)  # fmt: skip
    return result


def _source(spec: BackfillSpec) -> DbSource | FileSource:
    if is_database_url(spec.source):
        return DbSource(
            spec.source,
            spec.table,
            spec.query,
            spec.id_column,
            spec.text_column,
            spec.updated_column,
        )
    return FileSource(spec.source)


def _changes(
    source: DbSource | FileSource,
    reader: SourceReader | None,
    since: datetime | None,
    max_chars: int,
) -> tuple[datetime | None, Iterator[tuple[str, Entry]]]:
    """Up to when there is something new since ``since`` (None: nothing), and its entries."""
    if reader is not None:
        until = reader.max_updated(since)
        if until is None:
            return None, iter(())
        return until, ((source.key, e) for e in _db_entries(reader, since, until, max_chars))
    assert isinstance(source, FileSource)
    changed = source.changed_since(since)
    until = max((f.updated_at for f in changed), default=None)
    return until, _file_entries([f.path for f in changed], max_chars)


def _any_batch(pipeline: Pipeline) -> bool:
    return any(isinstance(t, ClaudeTier) and t.mode == "batch" for t in pipeline.tiers)


def _ingest(
    rt: Runtime,
    pipeline: Pipeline,
    result: BackfillResult,
    entries: Iterator[tuple[str, Entry]],
) -> None:
    assert result.job_name is not None
    with rt.sessions.begin() as session:
        job_id, _ = repo.open_job(session, result.job_name, pipeline.model_dump(mode="json"))
        result.job_id = job_id
        sub_id = repo.start_submission(session, job_id, result.source)
    read = 0
    pending: dict[str, tuple[list[NewItem], list[tuple[int, str, str]]]] = {}

    def flush() -> None:
        added: list[int] = []
        with rt.sessions.begin() as session:
            for where, (batch, rejected) in pending.items():
                got = repo.add_items(session, job_id, sub_id, batch)
                for line_no, k, first in got.duplicates:
                    rejected.append((line_no, f"duplicate_id: {k!r} first seen on line {first}", k))
                repo.add_rejected(session, job_id, sub_id, where, rejected)
                added += got.added
                result.items_existing += got.existing
                result.lines_rejected += len(rejected)
        result.items_added += len(added)
        pending.clear()
        publish(
            rt, [Message(Phase.TIER, job_id, 0, c) for c in chunks(added, rt.batch_size(job_id, 0))]
        )

    for where, entry in entries:
        read += 1
        batch, rejected = pending.setdefault(where, ([], []))
        if len(entry) == 4:
            batch.append(NewItem(entry[0], entry[1], entry[2], entry[3]))
        else:
            rejected.append((entry[0], entry[1], entry[2]))
        if read % CHUNK_LINES == 0:
            flush()
    flush()
    with rt.sessions.begin() as session:
        repo.finish_submission(
            session,
            sub_id,
            {
                "lines_read": read,
                "items_added": result.items_added,
                "items_existing": result.items_existing,
                "lines_rejected": result.lines_rejected,
            },
        )
        repo.job_submitted(session, job_id)


@app.task(name="cascade.backfill")
@beat_job
def backfill(name: str) -> dict[str, Any]:
    """A configured backfill, as beat runs it nightly."""
    result = run_backfill(get_runtime(), find_backfill(name))
    return {"run_id": result.run_id, "job_id": result.job_id, "items": result.items_added}


@dataclass(frozen=True, slots=True)
class BatchReport:
    batches: int
    by_status: dict[str, int]
    requests: dict[str, int]  # succeeded, errored, expired, canceled (as the API counted them)
    batch_calls: int
    cost_nanos: int  # what the batch calls cost (batch price)
    realtime_nanos: int  # the same calls' tokens at the realtime price
    # the same calls at the realtime price with no prompt caching (every prompt token
    # at the input price): what batching and caching save together
    uncached_nanos: int = 0


def batch_report(rt: Runtime, job_id: int) -> BatchReport:
    from workers.providers.base import Usage

    with rt.sessions() as session:
        rows = batches_repo.job_batches(session, job_id)
        calls = batches_repo.batch_calls(session, job_id)
    by_status: dict[str, int] = {}
    requests: dict[str, int] = {}
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        for k, v in (r.counts or {}).items():
            if k != "processing":
                requests[k] = requests.get(k, 0) + int(v)
    # batch tiers write the cache for an hour (workers.pipeline.ClaudeTier.ttl)
    realtime = sum(
        rt.prices.cost_nanos(
            c.model,
            Usage(c.input_tokens, c.output_tokens, c.cache_write_tokens, c.cache_read_tokens),
            cache_ttl="1h",
        )
        for c in calls
    )
    uncached = sum(
        rt.prices.cost_nanos(
            c.model,
            Usage(c.input_tokens + c.cache_write_tokens + c.cache_read_tokens, c.output_tokens),
        )
        for c in calls
    )
    return BatchReport(
        len(rows),
        by_status,
        requests,
        len(calls),
        sum(c.cost_nanos for c in calls),
        realtime,
        uncached,
    )
