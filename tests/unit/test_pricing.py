from __future__ import annotations

from dataclasses import fields
from decimal import Decimal
from pathlib import Path

import pytest

from workers.pricing import (
    ModelPrice,
    PriceTable,
    PricingError,
    UnknownModelError,
    format_usd,
    nanos_to_usd,
    normalise_model_id,
)
from workers.providers.base import Usage


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-prices.toml"
    path.write_text(text, encoding="utf-8")
    return path


# Per token: 1 USD/MTok = 1000 nano-USD.
COST_CASES = [
    # plain: haiku-5-5 input 0.10 -> 100/token, output 0.50 -> 500/token
    ("claude-haiku-5-5", Usage(1000, 200), False, "5m", 100_000 + 100_000),
    # nothing used costs nothing
    ("claude-haiku-5-5", Usage(), False, "5m", 0),
    # cache write, 5-minute TTL: sonnet-5-5 2.50 -> 2500/token, plus 10 input at 2000
    ("claude-sonnet-5-5", Usage(10, 0, 1000, 0), False, "5m", 20_000 + 2_500_000),
    # cache write, 1-hour TTL bills the 1h rate (4 -> 4000/token), same usage
    ("claude-sonnet-5-5", Usage(10, 0, 1000, 0), False, "1h", 20_000 + 4_000_000),
    # cache read: opus-5-5 reads at 0.20 (0.05x its 4 input), output 20 -> 20000/token
    ("claude-opus-5-5", Usage(0, 100, 0, 10_000), False, "5m", 2_000_000 + 2_000_000),
    # the TTL changes nothing when nothing is written
    ("claude-opus-5-5", Usage(0, 100, 0, 10_000), False, "1h", 4_000_000),
    # batch halves everything: opus-5 5/25 -> 5_000_000 + 2_500_000, then half
    ("claude-opus-5", Usage(1000, 100), True, "5m", 3_750_000),
    # batch halves cache tokens too: haiku-4-5 write 1250 + read 100, then half
    ("claude-haiku-4-5", Usage(0, 0, 2, 2), True, "5m", (2500 + 200) // 2),
    # half a nano rounds up: one 5m cache write on haiku-5-5 is 125, halved 62.5 -> 63
    ("claude-haiku-5-5", Usage(0, 0, 1, 0), True, "5m", 63),
    # haiku-5-5 at exactly 100,000 prompt tokens is still the short-prompt rate
    ("claude-haiku-5-5", Usage(100_000, 10), False, "5m", 10_000_000 + 5_000),
    # one token over the threshold bills the whole request at the long rate (500, 2500)
    ("claude-haiku-5-5", Usage(100_001, 10), False, "5m", 50_000_500 + 25_000),
    # the threshold counts input + cache write + cache read, and long cache rates apply
    # (long cache write 5m 0.625 -> 625, long cache read 0.05 -> 50)
    ("claude-haiku-5-5", Usage(50_000, 0, 1, 50_000), False, "5m", 25_000_000 + 625 + 2_500_000),
    # long prompt and batch together: half of the long rate
    ("claude-haiku-5-5", Usage(200_000, 0), True, "5m", 50_000_000),
    # Bedrock cross-region profile id finds the Claude API price (same as the plain row)
    ("us.anthropic.claude-haiku-5-5", Usage(1000, 200), False, "5m", 200_000),
    # Bedrock id without a region prefix
    ("anthropic.claude-haiku-5-5", Usage(1000, 200), False, "5m", 200_000),
    # Bedrock versioned id of an older model: prefix and "-v1:0" stripped
    ("anthropic.claude-haiku-4-5-20251001-v1:0", Usage(1000, 0), False, "5m", 1_000_000),
    # Vertex "@date" id becomes the dated Claude API id
    ("claude-haiku-4-5@20251001", Usage(1000, 0), False, "5m", 1_000_000),
]


@pytest.mark.parametrize(("model", "usage", "batch", "ttl", "expected"), COST_CASES)
def test_cost_nanos(
    table: PriceTable, model: str, usage: Usage, batch: bool, ttl: str, expected: int
) -> None:
    cost = table.cost_nanos(model, usage, batch=batch, cache_ttl=ttl)
    assert cost == expected
    assert type(cost) is int


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("us.anthropic.claude-haiku-5-5", "claude-haiku-5-5"),
        ("eu.anthropic.claude-opus-5-5", "claude-opus-5-5"),
        ("global.anthropic.claude-sonnet-5-5", "claude-sonnet-5-5"),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5-20251001"),
        ("claude-sonnet-5", "claude-sonnet-5"),  # already canonical
    ],
)
def test_normalise_model_id(model: str, expected: str) -> None:
    assert normalise_model_id(model) == expected


def test_every_shipped_price_is_whole_nanos_per_token(table: PriceTable) -> None:
    for model in table.models():
        price = table.price(model)
        for f in fields(ModelPrice):
            value = getattr(price, f.name)
            if isinstance(value, Decimal):
                assert (value * 1000) % 1 == 0, (model, f.name, value)


@pytest.mark.parametrize(
    ("model", "mechanism"),
    [
        ("claude-sonnet-5-5", "tool"),  # forced tool use errors on Sonnet 5.5
        ("claude-opus-5-5", "tool"),  # ... and on Opus 5.5
        ("claude-haiku-5-5", "forced_tool"),
        ("claude-haiku-4-5", "forced_tool"),
        ("claude-opus-5", "forced_tool"),
        ("us.anthropic.claude-opus-5-5", "tool"),  # normalised like prices
    ],
)
def test_structured_mechanism(table: PriceTable, model: str, mechanism: str) -> None:
    assert table.structured(model) == mechanism


def test_shipped_models_and_discount(table: PriceTable) -> None:
    assert table.models() == [
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-haiku-5-5",
        "claude-opus-5",
        "claude-opus-5-5",
        "claude-sonnet-5",
        "claude-sonnet-5-5",
    ]
    assert table.batch_discount == Decimal("0.5")
    assert table.knows("anthropic.claude-opus-5-5")
    assert not table.knows("claude-opus-9")


def test_unknown_model_error_lists_known_models(table: PriceTable) -> None:
    with pytest.raises(UnknownModelError) as info:
        table.cost_nanos("gpt-4o", Usage(1, 1))
    message = str(info.value)
    assert "'gpt-4o'" in message
    assert "claude-haiku-5-5, claude-opus-5" in message
    assert isinstance(info.value, PricingError)


def test_user_override_file_wins_and_adds(tmp_path: Path) -> None:
    # Given a user file that cuts one Sonnet 5.5 rate, re-prices Opus 5 under its
    # Bedrock id, and adds a model of its own
    path = write(
        tmp_path,
        """
        batch_discount = 0.25
        [claude-sonnet-5-5]
        cache_read = 0.10
        ["us.anthropic.claude-opus-5"]
        input = 1
        [my-model]
        input = 3
        output = 15
        cache_write_5m = 3.75
        cache_write_1h = 6
        cache_read = 0.30
        structured = "json_schema"
        """,
    )
    # When it is loaded over the shipped prices
    table = PriceTable.load(path)
    # Then the overridden field wins and the others stay as shipped
    assert table.cost_nanos("claude-sonnet-5-5", Usage(0, 0, 0, 1000)) == 100_000
    assert table.cost_nanos("claude-sonnet-5-5", Usage(1000, 0)) == 2_000_000
    assert table.cost_nanos("claude-opus-5", Usage(1000, 100)) == 1_000_000 + 2_500_000
    assert table.cost_nanos("my-model", Usage(1000, 100)) == 3_000_000 + 1_500_000
    assert table.structured("my-model") == "json_schema"
    # and the user's batch discount applies (25% off)
    assert table.cost_nanos("my-model", Usage(1000, 100), batch=True) == 3_375_000
    # and models not mentioned are untouched
    assert table.cost_nanos("claude-haiku-5-5", Usage(1000, 200)) == 200_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a price that is not a number names the file, model and key
        ('[claude-x]\ninput = "cheap"', "claude-x.input: must be a number >= 0"),
        # negative prices are refused
        ("[claude-sonnet-5]\noutput = -1", "claude-sonnet-5.output: must be a number >= 0"),
        # nan parses as TOML but is not a price
        ("[claude-sonnet-5]\noutput = nan", "claude-sonnet-5.output: must be a number >= 0"),
        # a typo in a key is caught, not silently ignored
        ("[claude-sonnet-5]\ncache_wirte_5m = 1", "claude-sonnet-5.cache_wirte_5m: unknown key"),
        # an unknown mechanism
        ('[claude-opus-5]\nstructured = "xml"', "claude-opus-5.structured: must be one of"),
        # a new model must be complete
        ("[claude-x]\ninput = 1", "claude-x.output: missing"),
        # a long tier needs all its rates
        ("[claude-opus-5]\nlong_prompt_over = 1000", "claude-opus-5.long_input: missing"),
        # an unquoted id with dots becomes nested tables: say so
        ("[anthropic.claude-x]\ninput = 1", "quote model ids that contain a dot"),
        # the discount is a fraction
        ("batch_discount = 2", "batch_discount: must be a number from 0 to 1"),
        # not TOML at all
        ("[claude-x\n", "not valid TOML"),
    ],
)
def test_bad_override_file_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingError) as info:
        PriceTable.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_bad_shipped_file_names_prices_toml() -> None:
    with pytest.raises(PricingError, match=r"^prices\.toml: claude-x\.input: must be a number"):
        PriceTable._build([("prices.toml", 'batch_discount = 0.5\n[claude-x]\ninput = "a"')])


def test_missing_override_file(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read the price file"):
        PriceTable.load(tmp_path / "nope.toml")


def test_max_cost_nanos(table: PriceTable) -> None:
    # worst case: every prompt token at the input rate, every output token used
    assert table.max_cost_nanos("claude-haiku-5-5", 1000, 100) == 100_000 + 50_000
    # with caching allowed, the dearer 1h write rate bounds the prompt
    assert table.max_cost_nanos("claude-haiku-5-5", 1000, 100, cache_ttl="1h") == 250_000
    # a long prompt bills at the long rate
    assert table.max_cost_nanos("claude-haiku-5-5", 200_000, 100) == 100_000_000 + 250_000
    assert table.max_cost_nanos("claude-haiku-5-5", 1000, 100, batch=True) == 75_000
    # the bound really bounds: a cached call within the same sizes never costs more
    actual = table.cost_nanos("claude-haiku-5-5", Usage(10, 100, 990, 0), cache_ttl="1h")
    assert actual <= table.max_cost_nanos("claude-haiku-5-5", 1000, 100, cache_ttl="1h")


def test_bad_arguments(table: PriceTable) -> None:
    with pytest.raises(ValueError, match="cache_ttl"):
        table.cost_nanos("claude-haiku-5-5", Usage(1, 1), cache_ttl="24h")
    with pytest.raises(ValueError, match=">= 0"):
        table.cost_nanos("claude-haiku-5-5", Usage(-1, 1))


@pytest.mark.parametrize(
    ("nanos", "usd", "text"),
    [
        (4_213_000, Decimal("0.004213000"), "$0.004213"),  # the usual per-item size
        (1_500_000_000, Decimal("1.500000000"), "$1.50"),  # at least cents
        (10, Decimal("0.000000010"), "$0.00000001"),  # a single cached token, exact
        (0, Decimal("0E-9"), "$0.00"),
        (123_456_789_012, Decimal("123.456789012"), "$123.456789012"),
        (-5, Decimal("-5E-9"), "-$0.000000005"),  # refunds/credits keep their sign
    ],
)
def test_money_helpers(nanos: int, usd: Decimal, text: str) -> None:
    assert nanos_to_usd(nanos) == usd
    assert nanos_to_usd(nanos).as_tuple().exponent == -9
    assert format_usd(nanos) == text
