"""Values the engine hands to storage: one step per attempt row, one result per item."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.decision import Decision
from workers.providers.base import NOT_SENT, Usage

NO_USAGE = Usage()

SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """An item claimed for a tier: its row id, its text and its next step number."""

    pk: int
    text: str
    next_step: int
    # tokens already seen for this item (from a lower tier), for the baseline estimate
    seen_input_tokens: int = 0
    seen_output_tokens: int = 0


# Not frozen: a frozen dataclass sets each of these fields through object.__setattr__,
# which made building a Step 3x dearer; a rules tier builds one per item.
@dataclass(slots=True)
class Step:
    item_pk: int
    step: int
    tier_index: int
    tier: str
    # primary | fallback | rules | local | consistency | verifier (checks before accepting,
    # part of the item's cost) | shadow (a sample sent to the next tier: calibration
    # spend, never part of the item's cost, calls or latency)
    role: str
    provider: str
    model: str
    outcome: str
    decision: str | None = None
    label: str | None = None
    confidence: float | None = None
    hedged: bool = False
    usage: Usage = NO_USAGE  # frozen, so one instance serves every step without a call
    is_batch: bool = False
    cost_nanos: int = 0
    latency_ms: int = 0
    http_status: int | None = None
    error: str | None = None
    request_id: str | None = None


@dataclass(slots=True)
class ItemResult:
    pk: int
    decision: Decision
    steps: list[Step] = field(default_factory=list)
    baseline_nanos: int = 0
    served_by_fallback: bool = False

    @property
    def cost_nanos(self) -> int:
        return sum(s.cost_nanos for s in self.steps if s.role != SHADOW)

    @property
    def latency_ms(self) -> int:
        return sum(s.latency_ms for s in self.steps if s.role != SHADOW)

    @property
    def model_calls(self) -> int:
        # a step that sent no request (breaker open, drill) is not a call
        return sum(
            1 for s in self.steps if s.role not in ("rules", SHADOW) and s.outcome not in NOT_SENT
        )

    @property
    def calibration_nanos(self) -> int:
        """What shadow samples of this item cost (reported apart, as calibration spend)."""
        return sum(s.cost_nanos for s in self.steps if s.role == SHADOW)

    @property
    def decided_step(self) -> Step | None:
        """The step that carries the visit's decision (checks and shadows come after it)."""
        return next((s for s in reversed(self.steps) if s.decision is not None), None)
