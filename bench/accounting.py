"""What the fake served (its request log) against what the ledger recorded, for one job.

Pure functions over plain rows (:class:`Call` from the request log, :class:`Row`
from ``attempts``, :class:`ItemRow` from ``items``), plus :func:`load_ledger`, which
reads the rows with SQLAlchemy (Postgres or SQLite). No processes, no sleeping: the
soak, the tail scenario and the tests all call the same functions.

How a ledger row counts is one table, :data:`COUNTED_AS` (attempt outcome ->
``call`` / ``no_call``); an outcome missing from it is reported as unknown, so a
renamed or new outcome shows up instead of being miscounted.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from cascade.fakeapi.reqlog import item_digest

CALL: Final = "call"  # a request reached (or was meant to reach) the API
NO_CALL: Final = "no_call"  # a step that made no request: a rule, an open breaker, a drill

# attempts.outcome -> how the row counts. Edit here when outcome names change.
COUNTED_AS: dict[str, str] = {
    "ok": CALL,  # an answer (billed)
    "refusal": CALL,  # HTTP 200 with stop_reason refusal (billed)
    "malformed": CALL,  # HTTP 200 that failed validation (billed)
    "transient": CALL,  # 429, 5xx, 529, timeout, dropped connection
    "permanent": CALL,  # 400, 401/403, 404
    "context": CALL,  # the prompt did not fit
    "spend_limit": CALL,  # the API refused for the spend limit
    "rule_match": NO_CALL,
    "rule_miss": NO_CALL,
    "breaker_open": NO_CALL,  # the breaker answered for the API
    "drill": NO_CALL,  # a chaos drill disabled the model
    "in_flight": CALL,  # recorded before it was sent; its reply not recorded (yet)
    "unknown": CALL,  # sent, then the worker died before the reply was recorded
    "reused": NO_CALL,  # a repeated text took an earlier item's decision
}
# attempts.decision values that settle a tier visit and must not repeat for an
# (item, tier): a second one means the visit was decided twice. ("fallback" and
# "defer" may legitimately repeat: a deferred item goes round the chain again.)
ONCE_PER_TIER: Final = ("accept", "escalate", "fail", "capped", "review")
FINAL_STATUSES: Final = ("done", "failed", "budget_capped", "review")
SERVER_OUTCOMES: Final = ("ok", "error", "dropped", "cut_off")
TOKEN_KEYS: Final = ("input", "output", "cache_write", "cache_read")
SAMPLE: Final = 20  # request ids listed per group in a report


@dataclass(frozen=True, slots=True)
class Call:
    """One line of the fake's request log."""

    request_id: str
    model: str | None
    outcome: str  # ok | error | dropped | cut_off
    status: int | None
    item: str | None  # item_digest of the item's text
    tokens: tuple[int, int, int, int]  # input, output, cache write, cache read (billed)
    received: float
    sent: float | None
    ended: float

    @classmethod
    def from_log(cls, e: Mapping[str, Any]) -> Call:
        return cls(
            request_id=str(e["request_id"]),
            model=e.get("model"),
            outcome=str(e["outcome"]),
            status=e.get("status"),
            item=e.get("item"),
            tokens=(
                int(e.get("input_tokens") or 0),
                int(e.get("output_tokens") or 0),
                int(e.get("cache_creation_input_tokens") or 0),
                int(e.get("cache_read_input_tokens") or 0),
            ),
            received=float(e["received"]),
            sent=None if e.get("sent") is None else float(e["sent"]),
            ended=float(e.get("ended") or e.get("sent") or e["received"]),
        )


@dataclass(frozen=True, slots=True)
class Row:
    """One attempts row."""

    item_id: int
    step: int
    tier_index: int
    role: str
    model: str
    outcome: str
    decision: str | None
    tokens: tuple[int, int, int, int]
    request_id: str | None
    http_status: int | None = None
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ItemRow:
    id: int
    status: str
    text: str | None
    updated_at: float
    finished_at: float | None


@dataclass
class Ledger:
    rows: list[Row] = field(default_factory=list)
    items: list[ItemRow] = field(default_factory=list)


def epoch(value: Any) -> float | None:
    """A database timestamp as epoch seconds (naive ones are UTC, as SQLite keeps them)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def load_ledger(engine: Any, job_id: int) -> Ledger:
    """The job's attempts and items, read with a SQLAlchemy engine."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = [
            Row(
                item_id=int(r.item_id),
                step=int(r.step),
                tier_index=int(r.tier_index),
                role=str(r.role),
                model=str(r.model),
                outcome=str(r.outcome),
                decision=r.decision,
                tokens=(
                    int(r.input_tokens or 0),
                    int(r.output_tokens or 0),
                    int(r.cache_write_tokens or 0),
                    int(r.cache_read_tokens or 0),
                ),
                request_id=r.request_id,
                http_status=r.http_status,
                created_at=epoch(r.created_at) or 0.0,
            )
            for r in conn.execute(
                text(
                    "SELECT item_id, step, tier_index, role, model, outcome, decision, "
                    "input_tokens, output_tokens, cache_write_tokens, cache_read_tokens, "
                    "request_id, http_status, created_at FROM attempts WHERE job_id = :job "
                    "ORDER BY item_id, step"
                ),
                {"job": job_id},
            )
        ]
        items = [
            ItemRow(
                int(r.id), str(r.status), r.text, epoch(r.updated_at) or 0.0, epoch(r.finished_at)
            )
            for r in conn.execute(
                text(
                    "SELECT id, status, text, updated_at, finished_at FROM items "
                    "WHERE job_id = :job ORDER BY id"
                ),
                {"job": job_id},
            )
        ]
    return Ledger(rows, items)


def counted_as(row: Row) -> str:
    return COUNTED_AS.get(row.outcome, "unknown")


def ledger_calls(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if counted_as(r) == CALL]


def _sum(tokens: Iterable[tuple[int, int, int, int]]) -> dict[str, int]:
    totals = [0, 0, 0, 0]
    for t in tokens:
        for k in range(4):
            totals[k] += t[k]
    return dict(zip(TOKEN_KEYS, totals, strict=True))


def compare(calls: Sequence[Call], rows: Sequence[Row]) -> dict[str, Any]:
    """Calls and tokens, server against ledger, matched by request id.

    - ``server_calls``: every request the fake logged; ``ledger_calls``: attempt rows
      counted as a call. ``ledger_calls_without_request_id``: calls whose reply never
      reached the client (a dropped connection, a timeout): they cannot be matched by
      id and are compared by count with the server's ``dropped`` + ``cut_off``.
    - ``server_only``: server request ids no ledger row has, by server outcome, with a
      sample of ids; ``server_only_billed_tokens``: what those sent replies billed.
    - ``ledger_only``: ledger request ids the server never logged.
    - ``tokens``: totals per kind; ``tokens_equal``: the ledger's totals equal the
      server's exactly; ``token_mismatches``: ids both sides have with different usage.
    - ``unknown_outcomes``: ledger outcomes missing from :data:`COUNTED_AS`.
    - ``cut_off``: rows of calls a kill cut off (outcome ``unknown``: sent, reply never
      recorded); their tokens are the estimate, so ``tokens_equal`` holds only when
      there are none. Items billed twice by a kill can be at most this many.
    """
    by_id = {c.request_id: c for c in calls}
    made = ledger_calls(rows)
    ledger_ids: dict[str, list[Row]] = defaultdict(list)
    for r in made:
        if r.request_id is not None:
            ledger_ids[r.request_id].append(r)
    server_only: dict[str, list[str]] = defaultdict(list)
    for c in calls:
        if c.request_id not in ledger_ids:
            server_only[c.outcome].append(c.request_id)
    ledger_only = sorted(rid for rid in ledger_ids if rid not in by_id)
    mismatches = [
        rid for rid, rs in ledger_ids.items() if rid in by_id and rs[0].tokens != by_id[rid].tokens
    ]
    server_tokens = _sum(c.tokens for c in calls)
    ledger_tokens = _sum(r.tokens for r in made)
    unrecorded = _sum(by_id[rid].tokens for rid in server_only.get("ok", []))
    unknown = Counter(r.outcome for r in rows if counted_as(r) == "unknown")
    return {
        "server_calls": len(calls),
        "server_calls_by_outcome": dict(Counter(c.outcome for c in calls)),
        "ledger_calls": len(made),
        "ledger_calls_with_request_id": sum(len(v) for v in ledger_ids.values()),
        "ledger_calls_without_request_id": sum(1 for r in made if r.request_id is None),
        "server_only": {
            k: {"count": len(v), "sample": sorted(v)[:SAMPLE]} for k, v in server_only.items()
        },
        "server_only_billed_tokens": unrecorded,
        "ledger_only": {"count": len(ledger_only), "sample": ledger_only[:SAMPLE]},
        "tokens": {"server": server_tokens, "ledger": ledger_tokens},
        "tokens_equal": server_tokens == ledger_tokens,
        "token_mismatches": {"count": len(mismatches), "sample": sorted(mismatches)[:SAMPLE]},
        "unknown_outcomes": dict(unknown),
        "cut_off": sum(1 for r in made if r.outcome == "unknown"),
    }


def duplicates(rows: Sequence[Row]) -> dict[str, Any]:
    """Rows that must be unique and are not.

    - ``item_steps``: (item, step) pairs with more than one row;
    - ``request_ids``: request ids on more than one row (one API call recorded twice);
    - ``decisions``: (item, tier, decision) with a decision of :data:`ONCE_PER_TIER`
      recorded more than once: the item's visit to that tier was decided twice.
    """
    steps = Counter((r.item_id, r.step) for r in rows)
    rids = Counter(r.request_id for r in rows if r.request_id is not None)
    decisions = Counter(
        (r.item_id, r.tier_index, r.decision) for r in rows if r.decision in ONCE_PER_TIER
    )
    return {
        "item_steps": sorted(k for k, n in steps.items() if n > 1)[:SAMPLE],
        "item_steps_count": sum(1 for n in steps.values() if n > 1),
        "request_ids": sorted(k for k, n in rids.items() if n > 1)[:SAMPLE],
        "request_ids_count": sum(1 for n in rids.values() if n > 1),
        "decisions": [list(k) for k in sorted(k for k, n in decisions.items() if n > 1)][:SAMPLE],
        "decisions_count": sum(1 for n in decisions.values() if n > 1),
    }


def double_billed(
    calls: Sequence[Call], rows: Sequence[Row], items: Sequence[ItemRow]
) -> dict[str, Any]:
    """Items billed twice at one tier.

    A call is *billed* when the fake sent a 200 (outcome ``ok``: an answer, a refusal
    or a malformed reply all cost tokens). A retry follows a call that was not billed
    (an error status, a dropped or cut-off connection), so counting billed calls only
    leaves retries out by construction. An item is **double-billed** at a tier when
    more than one billed call carries the same (item, model): the same link of the
    same tier answered the same item twice — a redelivered batch, a second worker
    after a lost lease, a lost write that was redone. Each model belongs to one tier
    and one role (primary or fallback) in these pipelines, so (item, model) is
    (item, tier, role). Calls meant to repeat (consistency samples, verifier, shadow
    calls of a pipeline that asks for them) would need their own key: the soak's
    pipeline has none.

    - ``server``: from the request log, the item known by the digest of its text
      (calls no ledger row mentions count too: a killed worker's answered calls);
    - ``ledger``: the same on attempt rows with a billed outcome (``ok``, ``refusal``,
      ``malformed``), keyed (item, tier, role, model) — what the ledger admits to.
    - ``extra_billed_calls``: billed calls beyond the first per key (server side).
    """
    digests = Counter(item_digest(i.text) for i in items if i.text is not None)
    digest_to_item = {item_digest(i.text): i.id for i in items if i.text is not None}
    per_key: Counter[tuple[str, str]] = Counter(
        (c.item, c.model or "") for c in calls if c.outcome == "ok" and c.item is not None
    )
    server = {k: n for k, n in per_key.items() if n > 1}
    billed = {"ok", "refusal", "malformed"}
    ledger = Counter(
        (r.item_id, r.tier_index, r.role, r.model) for r in rows if r.outcome in billed
    )
    ledger_twice = {k: n for k, n in ledger.items() if n > 1}
    return {
        # items sharing a text cannot be told apart by the server's log: keep it 0
        "ambiguous_texts": sum(1 for n in digests.values() if n > 1),
        "server_items": len({digest for digest, _ in server}),
        "server_keys": len(server),
        "extra_billed_calls": sum(n - 1 for n in server.values()),
        "server_sample": [
            {"item_id": digest_to_item.get(d), "item": d, "model": m, "billed": n}
            for (d, m), n in sorted(server.items())[:SAMPLE]
        ],
        "ledger_items": len({k[0] for k in ledger_twice}),
        "ledger_keys": len(ledger_twice),
        "ledger_sample": [[*k, n] for k, n in sorted(ledger_twice.items())[:SAMPLE]],
    }


def unfinished(items: Sequence[ItemRow]) -> dict[str, Any]:
    """Items not in a final status: lost, if the run is over."""
    left = [i for i in items if i.status not in FINAL_STATUSES]
    return {
        "count": len(left),
        "by_status": dict(Counter(i.status for i in left)),
        "sample": [i.id for i in left[:SAMPLE]],
    }


def settle_lag(calls: Sequence[Call], rows: Sequence[Row], items: Sequence[ItemRow]) -> list[float]:
    """Per finished item: its ``finished_at`` minus when the reply of its last call was
    sent (seconds). The time an answered item waits to be written as settled."""
    sent = {c.request_id: c.sent for c in calls if c.sent is not None}
    last: dict[int, float] = {}
    for r in rows:
        t = sent.get(r.request_id) if r.request_id is not None else None
        if t is not None and t > last.get(r.item_id, 0.0):
            last[r.item_id] = t
    return [
        i.finished_at - last[i.id]
        for i in items
        if i.finished_at is not None and i.id in last and i.status in FINAL_STATUSES
    ]


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95)) -> dict[str, float]:
    """Nearest-rank percentiles (and the max) of ``values``; empty for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {
        f"p{q:g}": ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]
        for q in qs
    }
    out["max"] = ordered[-1]
    out["mean"] = statistics.fmean(ordered)
    return {k: round(v, 3) for k, v in out.items()}


def steady_state(calls: Sequence[Call], middle: float = 0.8) -> dict[str, float]:
    """Throughput and concurrency over the middle ``middle`` of the calls by end time.

    The window runs from the end of the call at the (1 - middle)/2 quantile to the
    end of the one at the (1 + middle)/2 quantile, leaving out ramp-up and drain.
    ``calls_per_s``: calls that ended inside it per second; ``mean_latency_s``: their
    mean time in the server (received to ended); ``in_flight_mean``: the time-average
    of calls open at the server over the window (Little's law: about the product of
    the two).
    """
    if len(calls) < 10:
        return {}
    ends = sorted(c.ended for c in calls)
    n = len(ends)
    lo = ends[int(n * (1 - middle) / 2)]
    hi = ends[min(n - 1, int(n * (1 + middle) / 2))]
    span = hi - lo
    if span <= 0:
        return {}
    inside = [c for c in calls if lo < c.ended <= hi]
    busy = sum(max(0.0, min(c.ended, hi) - max(c.received, lo)) for c in calls)
    return {
        "window_s": round(span, 3),
        "calls": len(inside),
        "calls_per_s": round(len(inside) / span, 3),
        "mean_latency_s": round(statistics.fmean(c.ended - c.received for c in inside), 4),
        "in_flight_mean": round(busy / span, 2),
    }
