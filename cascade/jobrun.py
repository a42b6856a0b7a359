"""Running a job from the command line: submit or resume it, wait, report, stop cleanly.

Running it again finishes it: `cascade submit` of the same file (or `cascade resume`)
first puts back on the queues whatever an earlier, interrupted run left that no
message carries (:mod:`tasks.rescue`). Ctrl-C says what is kept and how to go on.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import typer

from cascade.cliutil import ensure_schema, err, fail, find_job, out
from cascade.offline import KeyProblem, model_api
from cascade.progress import STOP, JobBar, wait_for_job
from common.lifecycle import JobStatus
from common.settings import get_settings
from tasks.queues import FALLBACK_QUEUE


@contextmanager
def interrupted(ref: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C: one line saying the job keeps its items and how to finish it; exit 130."""
    STOP.clear()

    def on_sigint(signum: int, frame: Any) -> None:
        STOP.set()  # seen by the wait even if this KeyboardInterrupt is swallowed
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except KeyboardInterrupt:
        job = ref()
        err.print(
            f"\n[yellow]interrupted[/yellow]: job {job} keeps every item it has; "
            f"`cascade resume {job}` (or the same submit again) finishes it"
        )
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGINT, before)


@contextmanager
def models_for(pipeline: Any, offline: bool) -> Iterator[None]:
    try:
        api = model_api(pipeline, offline, err)
        api.__enter__()
    except KeyProblem as exc:
        raise fail(str(exc)) from None
    try:
        yield
    finally:
        api.__exit__(None, None, None)


def _worker(queues: list[str]) -> AbstractContextManager[Any]:
    if get_settings().embedded:
        from tasks.embedded import embedded_worker

        return embedded_worker(queues)
    return nullcontext()


def rescue(rt: Any, job_id: int, started: Any, queues: list[str], *, every: bool = False) -> None:
    """Put back on the queues what an earlier run left and no message carries
    (``every``: every waiting item, whatever the queues hold)."""
    from tasks.rescue import requeue_distributed, resend_embedded

    if rt.settings.embedded:
        n = resend_embedded(rt, job_id, started)
    else:
        from tasks.fleet import queue_depths

        n = requeue_distributed(rt, job_id, {} if every else queue_depths(queues))
    if n:
        err.print(f"{n:,} unfinished items of an earlier run sent again")


def stall_check(rt: Any, job_id: int, queues: list[str]) -> Callable[[], None] | None:
    """On the distributed runtime: what to do when nothing has finished for a while."""
    if rt.settings.embedded:
        return None

    def check() -> None:
        from tasks.fleet import live_workers, queue_depths, serving
        from tasks.rescue import requeue_distributed

        try:
            missing = [q for q, n in serving(live_workers(), queues).items() if not n]
            depths = queue_depths(queues)
        except Exception as exc:
            err.print(f"[yellow]cannot reach the broker[/yellow]: {exc}")
            return
        if missing:
            err.print(
                f"[yellow]no worker has taken work for {rt.settings.stall_s:.0f} s[/yellow]: "
                f"no live worker "
                f"consumes {', '.join(missing)}; start one: "
                f"cascade worker --queues {','.join(queues)}",
                soft_wrap=True,
            )
        elif n := requeue_distributed(rt, job_id, depths):
            err.print(f"{n:,} items no message carried put back on their queues")

    return check


def run_submit(
    file: Path,
    pipe: Any,
    name: str,
    *,
    wait: bool,
    budget_nanos: int | None,
    offline: bool,
    pipe_path: Path | None = None,
) -> None:
    from models.repo import utcnow
    from tasks.runtime import get_runtime
    from tasks.submit import SubmitError
    from tasks.submit import submit as do_submit
    from workers.intake import InputError

    started = utcnow()
    job_ref = [name]
    _check_prices(pipe, pipe_path)
    with interrupted(lambda: job_ref[0]), models_for(pipe, offline):
        ensure_schema()
        rt = get_runtime()
        embedded = rt.settings.embedded
        queues = [*pipe.queues, FALLBACK_QUEUE]
        if embedded and not wait:
            err.print("[dim]embedded runtime: processing in this process, so waiting[/dim]")
        # What is loaded by now (modules, tables, the engine) lives as long as the process:
        # kept out of the collector's way, a million-line file costs ~15 % less CPU.
        gc.freeze()
        with _worker(queues), JobBar(err, "reading") as bar:
            try:
                result = do_submit(
                    rt, file, pipe, name, budget_nanos=budget_nanos, on_progress=bar.intake
                )
            except (InputError, SubmitError) as exc:
                raise fail(str(exc)) from None
            job_ref[0] = str(result.job_id)
            _print_counts(result)
            c = result.counts
            if c["items_added"] + c["items_existing"] == 0:
                raise fail(
                    f"no valid line in {file} ({c['lines_rejected']:,} rejected): see "
                    f"`cascade rejected --job {result.job_id}`",
                    code=1,
                )
            if not result.created:  # a job that existed may hold what an earlier run left
                rescue(rt, result.job_id, started, queues)
            status = None
            if wait or embedded:
                status = wait_for_job(result.job_id, bar, stall_check(rt, result.job_id, queues))
    if status is not None:
        _report_and_exit(result.job_id, status)


def _check_prices(pipe: Any, pipe_path: Path | None) -> None:
    """Every model the pipeline names has a price, or one line naming the file, the
    places, and the models that have one."""
    from tasks.submit import check_models_priced
    from workers.pricing import PriceTable

    try:
        prices = PriceTable.load(get_settings().prices_file)
    except ValueError as exc:
        raise fail(str(exc)) from None
    problems = check_models_priced(pipe, prices)
    if problems:
        raise fail(
            f"{pipe_path or 'the pipeline'}: {'; '.join(problems)}. "
            f"Models with a price: {', '.join(prices.models())}"
        )


def _print_counts(result: Any) -> None:
    c = result.counts
    verb = "created" if result.created else "added to"
    out.print(
        f"job [bold]{result.job_id}[/bold] ({result.job_name}) {verb}: "
        f"{_n(c['items_added'], 'new item')}, {c['items_existing']:,} already in the job, "
        f"{_n(c['lines_rejected'], 'line')} rejected"
        + (f" (`cascade rejected --job {result.job_id}`)" if c["lines_rejected"] else "")
    )


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _report_and_exit(job_id: int, status: str) -> None:
    from cascade.cli_report import print_job_report

    print_job_report(str(job_id), "table")
    if status == JobStatus.FAILED:
        raise typer.Exit(1)


def run_resume(ref: str, budget_nanos: int | None, *, wait: bool, offline: bool) -> None:
    """Finish a job: paused, stopped (failed on its credentials), or interrupted."""
    from models import jobctl, repo
    from models.repo import utcnow
    from tasks.runtime import get_runtime
    from workers.pipeline import parse_pipeline

    ensure_schema()
    with get_runtime().sessions() as session:
        j = find_job(session, ref)
        job_id, status, message = int(j.id), str(j.status), j.message or ""
        pipe = parse_pipeline(j.pipeline, f"job {job_id}")
    if status == JobStatus.DONE:
        raise fail(f"job {job_id} is done: nothing to resume", code=1)
    if message == jobctl.CANCELLED:
        raise fail(f"job {job_id} was cancelled: submit the file as a new job", code=1)
    with interrupted(lambda: str(job_id)), models_for(pipe, offline):
        rt = get_runtime()
        queues = [*pipe.queues, FALLBACK_QUEUE]
        with rt.sessions.begin() as session:
            if status == JobStatus.PAUSED:
                repo.resume_job(session, job_id, budget_nanos)
            else:
                if budget_nanos is not None:
                    repo.set_budget(session, job_id, budget_nanos)
                jobctl.reopen_job(session, job_id)
        started = utcnow()  # what waits now was left by earlier runs, or reopened just now
        with _worker(queues), JobBar(err, f"job {job_id}") as bar:
            out.print(f"job {job_id} ({status}) resumed")
            rescue(rt, job_id, started, queues, every=True)
            result = None
            if wait or rt.settings.embedded:
                result = wait_for_job(job_id, bar, stall_check(rt, job_id, queues))
    if result is not None:
        _report_and_exit(job_id, result)
