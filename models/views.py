"""The reporting views: their current definition, as SQL text.

Analysts query ``report_items`` and ``report_tiers`` directly (see docs/views.md),
and ``models.reports`` reads them for the CLI. ``report_tiers`` leaves out shadow
samples (role ``shadow``: calibration spend, which never changes an item); a reused
decision (role ``reuse``: an item that took an identical text's decision) is no call,
and its ``calls`` count requests sent: a step that sent none (outcome ``breaker_open``
or ``drill``) is no call and has no latency.

A migration is frozen in time, so the revision that creates a view carries its
own copy of this SQL; ``tests/unit/test_views_sql.py`` asserts the copy in the
newest revision equals these constants. To change a view: edit it here, write a
new revision that drops and re-creates it with the new text, and the test follows.
``report_daily`` (a rollup plus a live tail, per dialect) is in ``models.views_daily``.

Portability (SQLite >= 3.28 and Postgres):

* Money: ``cost_nanos * 0.000000001`` is an exact ``numeric`` on Postgres (integer
  times a scale-9 numeric multiplies exactly) and a REAL on SQLite, where the
  ``CAST(... AS NUMERIC(38, 9))`` is a no-op.
* Percentiles use nearest rank, computed with ROW_NUMBER()/COUNT() windows
  (SQLite has no percentile_cont): the p-th percentile of N values sorted
  ascending is the value at rank ceil(p * N / 100), written with integer
  division as (p * N + 99) / 100.
"""

from __future__ import annotations

REPORT_ITEMS = "report_items"
REPORT_TIERS = "report_tiers"

REPORT_ITEMS_SQL = """\
CREATE VIEW report_items AS
SELECT
    i.job_id AS job_id,
    i.item_key AS item_id,
    i.status AS status,
    i.label AS label,
    i.final_tier AS tier,
    i.confidence AS confidence,
    CAST(i.cost_nanos * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    i.latency_ms AS latency_ms,
    i.model_calls AS attempts,
    i.fallback_used AS fallback_used,
    i.id AS item_pk,
    CAST(i.baseline_nanos * 0.000000001 AS NUMERIC(38, 9)) AS baseline_usd
FROM items AS i
"""

REPORT_TIERS_SQL = """\
CREATE VIEW report_tiers AS
WITH steps AS (
    SELECT
        a.id AS id,
        a.job_id AS job_id,
        a.tier_index AS tier_index,
        a.tier AS tier,
        a.item_id AS item_id,
        a.role AS role,
        a.decision AS decision,
        a.input_tokens AS input_tokens,
        a.output_tokens AS output_tokens,
        a.cost_nanos AS cost_nanos,
        a.latency_ms AS latency_ms,
        CASE WHEN a.role NOT IN ('rules', 'reuse') AND a.outcome NOT IN ('breaker_open', 'drill')
            THEN 1 ELSE 0 END AS is_call
    FROM attempts AS a
    WHERE a.role <> 'shadow'
),
ranked AS (
    SELECT
        s.job_id AS job_id,
        s.tier_index AS tier_index,
        s.tier AS tier,
        s.item_id AS item_id,
        s.role AS role,
        s.decision AS decision,
        s.input_tokens AS input_tokens,
        s.output_tokens AS output_tokens,
        s.cost_nanos AS cost_nanos,
        s.latency_ms AS latency_ms,
        s.is_call AS is_call,
        ROW_NUMBER() OVER (
            PARTITION BY s.job_id, s.tier_index, s.tier, s.is_call
            ORDER BY s.latency_ms, s.id
        ) AS latency_rank,
        COUNT(*) OVER (
            PARTITION BY s.job_id, s.tier_index, s.tier, s.is_call
        ) AS latency_n
    FROM steps AS s
)
SELECT
    r.job_id AS job_id,
    r.tier_index AS tier_index,
    r.tier AS tier,
    COUNT(DISTINCT r.item_id) AS entered,
    SUM(CASE WHEN r.decision = 'accept' THEN 1 ELSE 0 END) AS accepted,
    SUM(CASE WHEN r.decision = 'escalate' THEN 1 ELSE 0 END) AS escalated,
    SUM(CASE WHEN r.decision = 'fail' THEN 1 ELSE 0 END) AS failed,
    SUM(r.is_call) AS calls,
    SUM(r.input_tokens) AS input_tokens,
    SUM(r.output_tokens) AS output_tokens,
    CAST(SUM(r.cost_nanos) * 0.000000001 AS NUMERIC(38, 9)) AS cost_usd,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (50 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p50_ms,
    MAX(
        CASE WHEN r.is_call = 1 AND r.latency_rank = (95 * r.latency_n + 99) / 100
        THEN r.latency_ms END
    ) AS p95_ms,
    SUM(CASE WHEN r.role = 'fallback' THEN 1 ELSE 0 END) AS fallbacks
FROM ranked AS r
GROUP BY r.job_id, r.tier_index, r.tier
"""

# (name, CREATE VIEW statement), in creation order.
VIEWS: tuple[tuple[str, str], ...] = (
    (REPORT_ITEMS, REPORT_ITEMS_SQL),
    (REPORT_TIERS, REPORT_TIERS_SQL),
)

# What a step amounts to, as report_tiers counts it: a call is a request sent; a model
# step that sent none (breaker open, drill) is counted apart (``not_sent``), with no
# latency; a reused decision (role 'reuse', the decision of an item with the same text)
# is no call, and saved what its source's calls cost (models.cache_report.reuse_summary).
CALL = "a.role NOT IN ('rules', 'reuse') AND a.outcome NOT IN ('breaker_open', 'drill')"
NOT_SENT = "a.role NOT IN ('rules', 'reuse') AND a.outcome IN ('breaker_open', 'drill')"
REUSED = "a.role = 'reuse' AND a.decision IN ('accept', 'capped')"
SOURCE_COST = "(SELECT src.cost_nanos FROM items AS src WHERE src.id = a.reuse_of)"
