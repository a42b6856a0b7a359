"""Double billing against the kills of a soak: was each second bill the kill's doing?

A kill can cost a second bill only for a call it caught in flight, or one whose
answer had come back but was not yet in the ledger (the writer commits a returned
answer within ``CASCADE_FLUSH_MS`` plus a commit). Any answer that came back well
before the next kill is in the ledger, and a re-claim reuses it: billed again, it is
a defect. This sorts the items billed twice by the server's log accordingly.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from bench.accounting import SAMPLE, Call

MARGIN_S = 0.25  # a returned answer's way into the ledger: flush window, commit, slack


def twice_by_kill(
    calls: Sequence[Call], kills_at: Sequence[float], margin_s: float = MARGIN_S
) -> dict[str, Any]:
    """Each (item, model) billed more than once, by where its first billed call stood
    at the first kill after that call came in: ``in_flight`` (its reply not yet out),
    ``just_returned`` (out at most ``margin_s`` before), ``returned_before`` (out
    earlier: should be 0) or ``no_kill`` (no kill followed: should be 0 too)."""
    billed: dict[tuple[str, str], list[Call]] = defaultdict(list)
    for c in calls:
        if c.outcome == "ok" and c.item is not None:
            billed[(c.item, c.model or "")].append(c)
    kills = sorted(kills_at)
    counts = dict.fromkeys(("in_flight", "just_returned", "returned_before", "no_kill"), 0)
    suspects: list[dict[str, Any]] = []
    for (item, model), group in sorted(billed.items()):
        if len(group) < 2:
            continue
        first = min(group, key=lambda c: c.received)
        i = bisect.bisect_left(kills, first.received)
        if i == len(kills):
            where = "no_kill"
        elif kills[i] <= first.ended:
            where = "in_flight"
        elif kills[i] - first.ended <= margin_s:
            where = "just_returned"
        else:
            where = "returned_before"
        counts[where] += 1
        if where in ("returned_before", "no_kill") and len(suspects) < SAMPLE:
            suspects.append({"item": item, "model": model, "request_id": first.request_id})
    return {**counts, "margin_s": margin_s, "suspects": suspects}
