"""What a model call costs, in exact integer nano-USD (1e-9 USD), never floats.

Prices live in ``prices.toml`` (shipped in this package), optionally overridden
field by field by a user file in the same format. Every listed price in USD per
million tokens is a whole number of nano-USD per token (0.01 USD/MTok = 10 nano-USD
per token), so costs are computed with exact Decimals and rounded half-up once,
at the end, to an integer nano-USD.

Model ids are normalised before lookup, so the Bedrock ids
``anthropic.claude-haiku-5-5``, ``us.anthropic.claude-haiku-5-5`` and
``anthropic.claude-haiku-4-5-20251001-v1:0`` and the Vertex id
``claude-haiku-4-5@20251001`` find the same prices as the Claude API ids.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from importlib import resources
from pathlib import Path
from typing import Any, get_args

from workers.providers.base import Mechanism, Usage

SHIPPED_NAME = "prices.toml"
CACHE_TTLS = ("5m", "1h")
MECHANISMS: tuple[str, ...] = get_args(Mechanism)

_RATE_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_LONG_KEYS = tuple(f"long_{key}" for key in _RATE_KEYS)
_MODEL_KEYS = frozenset(
    (*_RATE_KEYS, *_LONG_KEYS, "long_prompt_over", "structured", "cache_min_tokens")
)
# A prefix shorter than this is silently not cached (anthropic-api-facts.md §7); a model
# whose table does not say is assumed to need this many.
DEFAULT_CACHE_MIN_TOKENS = 1024
_NANOS_PER_USD_PER_MTOK = Decimal(1000)  # 1 USD per 1e6 tokens = 1000 nano-USD per token
_NINE_PLACES = Decimal("0.000000001")

# "us." / "eu." / "global." cross-region profile, then "anthropic." (Bedrock).
_BEDROCK_PREFIX = re.compile(r"^(?:[a-z][a-z-]*\.)?anthropic\.")
_BEDROCK_VERSION = re.compile(r"-v\d+:\d+$")  # "-v1:0"
_VERTEX_DATE = re.compile(r"@(\d{8})$")  # "@20251001"


class PricingError(ValueError):
    """A price file cannot be used, or a model has no price."""


class UnknownModelError(PricingError):
    """No price for this model id (after normalisation)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for one prompt-size tier."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices (USD per million tokens) and its structured-answer mechanism."""

    model: str
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    structured: Mechanism
    long_prompt_over: int | None = None  # prompt tokens; above this the long_* rates apply
    long_input: Decimal | None = None
    long_output: Decimal | None = None
    long_cache_write_5m: Decimal | None = None
    long_cache_write_1h: Decimal | None = None
    long_cache_read: Decimal | None = None
    cache_min_tokens: int = DEFAULT_CACHE_MIN_TOKENS  # the shortest prefix the API caches

    def rates(self, prompt_tokens: int) -> Rates:
        """The rates that bill a request whose whole prompt has ``prompt_tokens`` tokens."""
        if self.long_prompt_over is not None and prompt_tokens > self.long_prompt_over:
            values = (getattr(self, key) for key in _LONG_KEYS)
        else:
            values = (getattr(self, key) for key in _RATE_KEYS)
        return Rates(*values)


def normalise_model_id(model: str) -> str:
    """Map Bedrock and Vertex model ids onto the Claude API id."""
    model = _BEDROCK_PREFIX.sub("", model.strip())
    model = _BEDROCK_VERSION.sub("", model)
    return _VERTEX_DATE.sub(r"-\1", model)


def nanos_to_usd(nanos: int) -> Decimal:
    """Exact USD, quantized to 9 places: 4_213_000 -> Decimal('0.004213000')."""
    return Decimal(nanos).scaleb(-9).quantize(_NINE_PLACES)


def format_usd(nanos: int) -> str:
    """Exact, at least cents, no trailing zeros beyond: '$0.004213', '$1.50', '-$0.00000001'."""
    sign = "-" if nanos < 0 else ""
    text = f"{nanos_to_usd(abs(nanos)):f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


class PriceTable:
    """All known model prices plus the batch discount; build with :meth:`load`."""

    def __init__(self, prices: dict[str, ModelPrice], batch_discount: Decimal) -> None:
        self._prices = dict(prices)
        self.batch_discount = batch_discount

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The shipped prices, then ``path`` (if given) overriding or adding models."""
        shipped = resources.files("workers").joinpath(SHIPPED_NAME).read_text(encoding="utf-8")
        layers = [(SHIPPED_NAME, shipped)]
        if path is not None:
            try:
                layers.append((str(path), Path(path).read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise PricingError(f"{path}: cannot read the price file: {exc}") from exc
        return cls._build(layers)

    @classmethod
    def _build(cls, layers: list[tuple[str, str]]) -> PriceTable:
        merged: dict[str, dict[str, Any]] = {}
        origin: dict[str, str] = {}  # model -> file that last touched it, for messages
        discount: Any = None
        for source, text in layers:
            data = _parse(source, text)
            problems: list[str] = []
            seen: dict[str, str] = {}
            for key, value in data.items():
                if key == "batch_discount":
                    if not _is_number(value) or not 0 <= value <= 1:
                        problems.append(f"{source}: batch_discount: must be a number from 0 to 1")
                    discount = value
                    continue
                if not isinstance(value, dict):
                    problems.append(f"{source}: {key}: unknown key (expected a model table)")
                    continue
                model = normalise_model_id(key)
                if model in seen:
                    problems.append(f"{source}: {key}: same model as {seen[model]}")
                    continue
                seen[model] = key
                problems += _check_fields(source, key, value)
                merged.setdefault(model, {}).update(value)
                origin[model] = source
            if problems:
                raise PricingError("\n".join(problems))
        problems = []
        prices = {}
        for model, fields in merged.items():
            try:
                prices[model] = _model_price(origin[model], model, fields)
            except PricingError as exc:
                problems.append(str(exc))
        if discount is None:
            problems.append(f"{SHIPPED_NAME}: batch_discount: missing")
        if problems:
            raise PricingError("\n".join(problems))
        return cls(prices, _to_decimal(discount))

    def models(self) -> list[str]:
        return sorted(self._prices)

    def knows(self, model: str) -> bool:
        return self._find(model) is not None

    def price(self, model: str) -> ModelPrice:
        found = self._find(model)
        if found is None:
            raise UnknownModelError(
                f"no price for model {model!r}; known models: {', '.join(self.models())} "
                "(add it to your prices file, CASCADE_PRICES_FILE)"
            )
        return found

    def structured(self, model: str) -> Mechanism:
        return self.price(model).structured

    def cache_min_tokens(self, model: str) -> int:
        """The shortest prefix ``model`` caches; the default for a model without a price."""
        found = self._find(model)
        return found.cache_min_tokens if found is not None else DEFAULT_CACHE_MIN_TOKENS

    def cost_nanos(
        self, model: str, usage: Usage, *, batch: bool = False, cache_ttl: str = "5m"
    ) -> int:
        """What one call with this usage costs, rounded half-up to a whole nano-USD.

        Cache writes the usage says were 1-hour ones (``cache_write_1h_tokens``) are
        priced at the 1-hour rate; the rest of ``cache_write_tokens`` at ``cache_ttl``'s.
        """
        _check_ttl(cache_ttl)
        one_hour = usage.cache_write_1h_tokens
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_write_tokens - one_hour,
            one_hour,
            usage.cache_read_tokens,
        )
        if any(count < 0 for count in counts):
            raise ValueError(f"token counts must be >= 0, got {usage}")
        prompt = usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens
        rates = self.price(model).rates(prompt)
        write = rates.cache_write_5m if cache_ttl == "5m" else rates.cache_write_1h
        per_mtok = (rates.input, rates.output, write, rates.cache_write_1h, rates.cache_read)
        return self._round(sum(n * r for n, r in zip(counts, per_mtok, strict=True)), batch)

    def max_cost_nanos(
        self,
        model: str,
        input_tokens: int,
        max_tokens: int,
        *,
        batch: bool = False,
        cache_ttl: str | None = None,
    ) -> int:
        """The most a call with this prompt size and ``max_tokens`` can cost.

        With ``cache_ttl`` the whole prompt is assumed to be written to the cache
        at that TTL when that is dearer than plain input; without it, no caching.
        """
        if input_tokens < 0 or max_tokens < 0:
            raise ValueError("input_tokens and max_tokens must be >= 0")
        rates = self.price(model).rates(input_tokens)
        per_input = rates.input
        if cache_ttl is not None:
            _check_ttl(cache_ttl)
            write = rates.cache_write_5m if cache_ttl == "5m" else rates.cache_write_1h
            per_input = max(per_input, write)
        total = input_tokens * per_input + max_tokens * rates.output
        return self._round(total, batch)

    def _round(self, usd_micro: Decimal | int, batch: bool) -> int:
        """Tokens x USD/MTok (i.e. micro-USD) -> integer nano-USD, half-up."""
        with localcontext() as ctx:
            ctx.prec = 80  # exact for any realistic token count and price
            nanos = Decimal(usd_micro) * _NANOS_PER_USD_PER_MTOK
            if batch:
                nanos *= 1 - self.batch_discount
            return int(nanos.to_integral_value(rounding=ROUND_HALF_UP))

    def _find(self, model: str) -> ModelPrice | None:
        return self._prices.get(model) or self._prices.get(normalise_model_id(model))


def _parse(source: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise PricingError(f"{source}: not valid TOML: {exc}") from exc


def _is_number(value: object) -> bool:
    """An exact TOML number: an integer, or a float parsed as Decimal (not nan/inf)."""
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fields(source: str, model: str, table: dict[str, Any]) -> list[str]:
    """Problems with the values present in one file's table for one model."""
    problems = []
    for key, value in table.items():
        where = f"{source}: {model}.{key}"
        if key not in _MODEL_KEYS:
            hint = "; quote model ids that contain a dot" if isinstance(value, dict) else ""
            problems.append(f"{where}: unknown key{hint}")
        elif key == "structured":
            if value not in MECHANISMS:
                problems.append(f"{where}: must be one of {', '.join(MECHANISMS)}")
        elif key in ("long_prompt_over", "cache_min_tokens"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{where}: must be a whole number of tokens >= 1")
        elif not _is_number(value) or value < 0:
            problems.append(f"{where}: must be a number >= 0")
    return problems


def _model_price(source: str, model: str, fields: dict[str, Any]) -> ModelPrice:
    """A complete :class:`ModelPrice` from merged, already type-checked fields."""
    missing = [key for key in (*_RATE_KEYS, "structured") if key not in fields]
    long_given = [key for key in ("long_prompt_over", *_LONG_KEYS) if key in fields]
    if long_given:
        missing += [key for key in ("long_prompt_over", *_LONG_KEYS) if key not in fields]
    if missing:
        raise PricingError("\n".join(f"{source}: {model}.{key}: missing" for key in missing))
    rates = {key: _to_decimal(fields[key]) for key in (*_RATE_KEYS, *_LONG_KEYS) if key in fields}
    return ModelPrice(
        model=model,
        structured=fields["structured"],
        long_prompt_over=fields.get("long_prompt_over"),
        cache_min_tokens=fields.get("cache_min_tokens", DEFAULT_CACHE_MIN_TOKENS),
        **rates,
    )


def _to_decimal(value: int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _check_ttl(cache_ttl: str) -> None:
    if cache_ttl not in CACHE_TTLS:
        raise ValueError(f"cache_ttl must be one of {', '.join(CACHE_TTLS)}, got {cache_ttl!r}")
