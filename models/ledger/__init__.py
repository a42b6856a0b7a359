"""The ledger of tier visits: claim items under a lease, journal each model call as it
is sent and as it returns, settle each item's visit, keep leases alive, find strays.

The ledger is the bill: a call is written as *in flight* before its request leaves
(:func:`journal`), and replaced by its reply or error when that returns, so a worker
killed mid-call leaves a row behind. The next claim of the item turns such a row into
``unknown`` (sent, outcome never seen, cost estimated) and hands every row of the
unfinished visit back to the caller (``Claimed.recorded``): answers already paid for
are reused, not bought again.

Attempt rows are keyed by (item, step). Results are written under the claim's lease
token: a worker that lost its lease (it was too slow, and the item was claimed again)
records its calls apart, numbered from ``ORPHAN_STEP_BASE``, deciding nothing.
"""

from models.ledger.claims import (
    ORPHAN_STEP_BASE,
    SWEEP_LOCK_KEY,
    Claimed,
    claim,
    extend_leases,
    new_token,
    take,
)
from models.ledger.settle import (
    Settled,
    journal,
    leases,
    recover_calls,
    released,
    settle,
    settled_values,
)
from models.ledger.sweep import Stray, mark_unsent, strays, try_sweep_lock, waiting_tiers

__all__ = [
    "ORPHAN_STEP_BASE",
    "SWEEP_LOCK_KEY",
    "Claimed",
    "Settled",
    "Stray",
    "claim",
    "extend_leases",
    "journal",
    "leases",
    "mark_unsent",
    "new_token",
    "recover_calls",
    "released",
    "settle",
    "settled_values",
    "strays",
    "take",
    "try_sweep_lock",
    "waiting_tiers",
]
