"""The ``report_daily`` view and its rollup's refresh, as SQL text per dialect.

See ``models.views`` for the conventions (money, nearest-rank percentiles, frozen
copies in the migrations checked by tests/unit/test_views_sql.py) and for the
predicates that say what a call is, shared with ``report_tiers``.
"""

from __future__ import annotations

from common.lifecycle import Outcome, Status
from models.views import CALL, NOT_SENT, REUSED, SOURCE_COST

# ---------------------------------------------------------------------------
# report_daily: one row per (UTC day, pipeline, tier). At 10 M attempt rows an
# aggregate over the attempts themselves takes tens of seconds, so the view reads
# a rollup (models.tables_rollup, kept by models.rollup.refresh) for the attempts
# with id <= rollup_mark.last_id and aggregates only the attempts after that mark
# (the tail) live, then merges the two: always exact and current, whether or not
# the rollup was refreshed lately (docs/views.md, "report_daily").
#
# Every counter is additive over attempts: ``items`` (distinct items with a step
# at the tier that day) counts an item's *first* step at that (day, tier) — a
# step with no earlier non-shadow step of the same item, tier and UTC day — which
# is the same number as COUNT(DISTINCT item_id) but can be summed over batches.
# The 95th percentile (nearest rank) is taken from a merged exact latency
# histogram: the smallest latency whose running count reaches 95 % of the calls
# (``100 * running >= 95 * total`` is ``running >= ceil(0.95 * total)``).
#
# Shadow steps (role 'shadow': calibration calls that never affect an item) are
# left out of every count and cost.
#
# Templates: {day_a}/{day_b} are the dialect's UTC day of attempt a/b; the view
# formats {tail_where} and {roll_where} empty, models.analytics adds time range
# and pipeline filters to both halves, so the CLI and the view cannot disagree.

REPORT_DAILY = "report_daily"

REPORT_DAILY_COLUMNS: tuple[str, ...] = (
    "day",
    "pipeline",
    "tier",
    "items",
    "escalated",
    Status.FAILED,  # visits that ended in Verdict.FAIL
    "calls",
    "cost_usd",
    "baseline_cost_usd",
    "p95_ms",
    "tier_index",
    "accepted",
    "not_sent",
    Outcome.REUSED,
    "reuse_saved_usd",
)

DAY_SQL: dict[str, str] = {
    "postgresql": "CAST({t}.created_at AT TIME ZONE 'UTC' AS DATE)",
    "sqlite": "date({t}.created_at)",
}

_SENT_PARTS = f"""\
        CASE WHEN {CALL}
            THEN 1 ELSE 0 END AS is_call,
        CASE WHEN {NOT_SENT}
            THEN 1 ELSE 0 END AS not_sent,
        CASE WHEN {REUSED}
            THEN 1 ELSE 0 END AS reused,
        CASE WHEN {REUSED}
            THEN {SOURCE_COST}
            ELSE 0 END AS reuse_saved_nanos"""

# One row per non-shadow attempt in {range}, with its group and its additive parts.
DAILY_STEPS = """\
    SELECT
        {day_a} AS day,
        j.pipeline_name AS pipeline,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.role AS role,
        a.decision AS decision,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.decision IN ('accept', 'fail')
            THEN {baseline} ELSE 0 END AS baseline_nanos,
{sent_parts},
        CASE WHEN EXISTS (
            SELECT 1 FROM attempts AS b
            WHERE b.item_id = a.item_id AND b.id < a.id
                AND b.tier_index = a.tier_index AND b.tier = a.tier
                AND b.role <> 'shadow'
                AND {day_b}
                    = {day_a}
        ) THEN 0 ELSE 1 END AS first_step
    FROM attempts AS a
    JOIN jobs AS j ON j.id = a.job_id{items_join}
    WHERE {range} AND a.role <> 'shadow'"""

_COUNTERS = """\
        SUM(s.first_step) AS items,
        SUM(CASE WHEN s.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
        SUM(CASE WHEN s.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
        SUM(CASE WHEN s.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
        SUM(s.is_call) AS calls,
        SUM(s.cost_nanos) AS cost_nanos,
        SUM(s.baseline_nanos) AS baseline_nanos,
        SUM(s.not_sent) AS not_sent,
        SUM(s.reused) AS reused,
        SUM(s.reuse_saved_nanos) AS reuse_saved_nanos"""

_REPORT_DAILY_BODY = """\
WITH tail AS (
{steps}{{tail_where}}
),
counts AS (
    SELECT r.day, r.pipeline, r.tier_index, r.tier, r.items, r.accepted, r.escalated,
        r.failed, r.calls, r.cost_nanos, r.baseline_nanos, r.not_sent, r.reused,
        r.reuse_saved_nanos
    FROM rollup_daily AS r
{{roll_where}}    UNION ALL
    SELECT s.day, s.pipeline, s.tier_index, s.tier,
{counters}
    FROM tail AS s
    GROUP BY s.day, s.pipeline, s.tier_index, s.tier
),
totals AS (
    SELECT c.day AS day, c.pipeline AS pipeline, c.tier_index AS tier_index, c.tier AS tier,
        SUM(c.items) AS items, SUM(c.accepted) AS accepted, SUM(c.escalated) AS escalated,
        SUM(c.failed) AS failed, SUM(c.calls) AS calls, SUM(c.cost_nanos) AS cost_nanos,
        SUM(c.baseline_nanos) AS baseline_nanos, SUM(c.not_sent) AS not_sent,
        SUM(c.reused) AS reused, SUM(c.reuse_saved_nanos) AS reuse_saved_nanos
    FROM counts AS c
    GROUP BY c.day, c.pipeline, c.tier_index, c.tier
),
latencies AS (
    SELECT r.day, r.pipeline, r.tier_index, r.tier, r.latency_ms, r.n
    FROM rollup_daily_latency AS r
{{roll_where}}    UNION ALL
    SELECT s.day, s.pipeline, s.tier_index, s.tier, s.latency_ms, COUNT(*) AS n
    FROM tail AS s
    WHERE s.is_call = 1
    GROUP BY s.day, s.pipeline, s.tier_index, s.tier, s.latency_ms
),
histogram AS (
    SELECT h.day AS day, h.pipeline AS pipeline, h.tier_index AS tier_index, h.tier AS tier,
        h.latency_ms AS latency_ms, SUM(h.n) AS n
    FROM latencies AS h
    GROUP BY h.day, h.pipeline, h.tier_index, h.tier, h.latency_ms
),
running AS (
    SELECT g.day, g.pipeline, g.tier_index, g.tier, g.latency_ms,
        SUM(g.n) OVER (
            PARTITION BY g.day, g.pipeline, g.tier_index, g.tier
            ORDER BY g.latency_ms ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
        ) AS upto,
        SUM(g.n) OVER (PARTITION BY g.day, g.pipeline, g.tier_index, g.tier) AS total
    FROM histogram AS g
),
p95 AS (
    SELECT u.day AS day, u.pipeline AS pipeline, u.tier_index AS tier_index, u.tier AS tier,
        MIN(u.latency_ms) AS p95_ms
    FROM running AS u
    WHERE 100 * u.upto >= 95 * u.total
    GROUP BY u.day, u.pipeline, u.tier_index, u.tier
)
SELECT
    t.day AS day,
    t.pipeline AS pipeline,
    t.tier AS tier,
    CAST(t.items AS BIGINT) AS items,
    CAST(t.escalated AS BIGINT) AS escalated,
    CAST(t.failed AS BIGINT) AS failed,
    CAST(t.calls AS BIGINT) AS calls,
    CAST(t.cost_nanos * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    CAST(t.baseline_nanos * 0.000000001 AS NUMERIC(38, 9)) AS baseline_cost_usd,
    p.p95_ms AS p95_ms,
    t.tier_index AS tier_index,
    CAST(t.accepted AS BIGINT) AS accepted,
    CAST(t.not_sent AS BIGINT) AS not_sent,
    CAST(t.reused AS BIGINT) AS reused,
    CAST(t.reuse_saved_nanos * 0.000000001 AS NUMERIC(38, 9)) AS reuse_saved_usd
FROM totals AS t
LEFT JOIN p95 AS p
    ON p.day = t.day AND p.pipeline = t.pipeline
    AND p.tier_index = t.tier_index AND p.tier = t.tier
"""


def _steps(dialect: str, range_sql: str, *, join_items: bool) -> str:
    # The refresh joins items (a hash join suits millions of rows); the view's tail
    # looks each deciding step's item up by key instead: Postgres cannot know how few
    # rows follow the watermark, and would otherwise hash all of items.
    day = DAY_SQL[dialect]
    return DAILY_STEPS.format(
        day_a=day.format(t="a"),
        day_b=day.format(t="b"),
        range=range_sql,
        baseline="i.baseline_nanos"
        if join_items
        else "(SELECT i.baseline_nanos FROM items AS i\n                WHERE i.id = a.item_id)",
        items_join="\n    JOIN items AS i ON i.id = a.item_id" if join_items else "",
        sent_parts=_SENT_PARTS,
    )


# Where the tail starts. On Postgres through a STABLE function: the planner
# evaluates it while planning to estimate how many attempts follow the mark (a
# subquery would be guessed at a third of the table, and the query JIT-compiled
# for a second), and the executor calls it again, in the statement's snapshot, so
# the view stays exact. SECURITY DEFINER: the reporting role reads the views only.
ROLLUP_LAST_ID_FUNCTION = "rollup_last_id"
ROLLUP_LAST_ID_SQL = """\
CREATE FUNCTION rollup_last_id() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
AS $$ SELECT last_id FROM rollup_mark WHERE id = 1 $$
"""
_TAIL_RANGE: dict[str, str] = {
    "postgresql": "a.id > rollup_last_id()",
    "sqlite": "a.id > (SELECT m.last_id FROM rollup_mark AS m WHERE m.id = 1)",
}

# The merged body per dialect; format it with tail_where (" AND ..." lines on the
# tail's attempts a / jobs j) and roll_where ("    WHERE ...\n" on the rollups r).
REPORT_DAILY_BODY: dict[str, str] = {
    d: _REPORT_DAILY_BODY.format(
        steps=_steps(d, _TAIL_RANGE[d], join_items=False),
        counters=_COUNTERS,
    )
    for d in DAY_SQL
}

# CREATE VIEW statements by dialect name (``op.get_bind().dialect.name``).
REPORT_DAILY_SQL: dict[str, str] = {
    d: f"CREATE VIEW {REPORT_DAILY} AS\n" + body.format(tail_where="", roll_where="")
    for d, body in REPORT_DAILY_BODY.items()
}

# The refresh (models.rollup): aggregate the attempts with :lo < id <= :hi and add
# them to the rollup. SQLite needs the WHERE before ON CONFLICT in INSERT ... SELECT.
_ROLLUP_ADD = """\
INSERT INTO rollup_daily (day, pipeline, tier_index, tier, items, accepted, escalated,
    failed, calls, cost_nanos, baseline_nanos, not_sent, reused, reuse_saved_nanos)
SELECT s.day, s.pipeline, s.tier_index, s.tier,
{counters}
FROM (
{steps}
) AS s
WHERE 1 = 1
GROUP BY s.day, s.pipeline, s.tier_index, s.tier
ON CONFLICT (day, pipeline, tier_index, tier) DO UPDATE SET
    items = rollup_daily.items + excluded.items,
    accepted = rollup_daily.accepted + excluded.accepted,
    escalated = rollup_daily.escalated + excluded.escalated,
    failed = rollup_daily.failed + excluded.failed,
    calls = rollup_daily.calls + excluded.calls,
    cost_nanos = rollup_daily.cost_nanos + excluded.cost_nanos,
    baseline_nanos = rollup_daily.baseline_nanos + excluded.baseline_nanos,
    not_sent = rollup_daily.not_sent + excluded.not_sent,
    reused = rollup_daily.reused + excluded.reused,
    reuse_saved_nanos = rollup_daily.reuse_saved_nanos + excluded.reuse_saved_nanos
"""

_ROLLUP_LATENCY_ADD = f"""\
INSERT INTO rollup_daily_latency (day, pipeline, tier_index, tier, latency_ms, n)
SELECT {{day_a}}, j.pipeline_name, a.tier_index, a.tier, a.latency_ms, COUNT(*)
FROM attempts AS a
JOIN jobs AS j ON j.id = a.job_id
WHERE a.id > :lo AND a.id <= :hi AND a.role <> 'shadow'
    AND {CALL}
GROUP BY {{day_a}}, j.pipeline_name, a.tier_index, a.tier, a.latency_ms
ON CONFLICT (day, pipeline, tier_index, tier, latency_ms) DO UPDATE SET
    n = rollup_daily_latency.n + excluded.n
"""

ROLLUP_REFRESH_SQL: dict[str, tuple[str, str]] = {
    d: (
        _ROLLUP_ADD.format(
            counters=_COUNTERS, steps=_steps(d, "a.id > :lo AND a.id <= :hi", join_items=True)
        ),
        _ROLLUP_LATENCY_ADD.format(day_a=DAY_SQL[d].format(t="a")),
    )
    for d in DAY_SQL
}

# The live aggregate over the attempts themselves: what report_daily was before the
# rollup. models.analytics runs it when a filter the rollup cannot serve is given
# (job, label); the tests hold the rollup to it. {where}: " AND ..." lines.

REPORT_DAILY_LIVE_POSTGRESQL = """\
SELECT
    CAST(a.created_at AT TIME ZONE 'UTC' AS DATE) AS day,
    j.pipeline_name AS pipeline,
    a.tier AS tier,
    COUNT(DISTINCT a.item_id) AS items,
    SUM(CASE WHEN a.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
    SUM(CASE WHEN a.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
    SUM(CASE WHEN {call} THEN 1 ELSE 0 END) AS calls,
    CAST(SUM(a.cost_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    CAST(
        SUM(CASE WHEN a.decision IN ('accept', 'fail') THEN i.baseline_nanos ELSE 0 END)
        * 0.000000001 AS NUMERIC(38, 9)
    ) AS baseline_cost_usd,
    percentile_disc(0.95) WITHIN GROUP (ORDER BY a.latency_ms)
        FILTER (WHERE {call}) AS p95_ms,
    a.tier_index AS tier_index,
    SUM(CASE WHEN a.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
    SUM(CASE WHEN {not_sent} THEN 1 ELSE 0 END) AS not_sent,
    SUM(CASE WHEN {reused} THEN 1 ELSE 0 END) AS reused,
    CAST(
        SUM(CASE WHEN {reused} THEN src.cost_nanos ELSE 0 END)
        * 0.000000001 AS NUMERIC(38, 9)
    ) AS reuse_saved_usd
FROM attempts AS a
JOIN jobs AS j ON j.id = a.job_id
JOIN items AS i ON i.id = a.item_id
LEFT JOIN items AS src ON src.id = a.reuse_of
WHERE a.role <> 'shadow'{where}
GROUP BY CAST(a.created_at AT TIME ZONE 'UTC' AS DATE), j.pipeline_name, a.tier_index, a.tier
"""

REPORT_DAILY_LIVE_SQLITE = """\
WITH steps AS (
    SELECT
        date(a.created_at) AS day,
        j.pipeline_name AS pipeline,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.item_id AS item_id,
        a.decision AS decision,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.decision IN ('accept', 'fail') THEN i.baseline_nanos ELSE 0 END
            AS baseline_nanos,
{sent_parts}
    FROM attempts AS a
    JOIN jobs AS j ON j.id = a.job_id
    JOIN items AS i ON i.id = a.item_id
    WHERE a.role <> 'shadow'{where}
),
ranked AS (
    SELECT
        s.*,
        ROW_NUMBER() OVER (
            PARTITION BY s.day, s.pipeline, s.tier_index, s.tier, s.is_call
            ORDER BY s.latency_ms
        ) AS latency_rank,
        COUNT(*) OVER (
            PARTITION BY s.day, s.pipeline, s.tier_index, s.tier, s.is_call
        ) AS latency_n
    FROM steps AS s
)
SELECT
    r.day AS day,
    r.pipeline AS pipeline,
    r.tier AS tier,
    COUNT(DISTINCT r.item_id) AS items,
    SUM(CASE WHEN r.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
    SUM(CASE WHEN r.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
    SUM(r.is_call) AS calls,
    CAST(SUM(r.cost_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    CAST(SUM(r.baseline_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS baseline_cost_usd,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (95 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p95_ms,
    r.tier_index AS tier_index,
    SUM(CASE WHEN r.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
    SUM(r.not_sent) AS not_sent,
    SUM(r.reused) AS reused,
    CAST(SUM(r.reuse_saved_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS reuse_saved_usd
FROM ranked AS r
GROUP BY r.day, r.pipeline, r.tier_index, r.tier
"""

# The call predicates go in by replace(): these texts are .format()ed with {where} later.
REPORT_DAILY_LIVE: dict[str, str] = {
    "postgresql": REPORT_DAILY_LIVE_POSTGRESQL.replace("{call}", CALL)
    .replace("{not_sent}", NOT_SENT)
    .replace("{reused}", REUSED),
    "sqlite": REPORT_DAILY_LIVE_SQLITE.replace("{sent_parts}", _SENT_PARTS),
}
