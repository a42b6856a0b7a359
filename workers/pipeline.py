"""The pipeline file: labels, instructions, input limits and the tiers in order.

Loaded from TOML and validated in full at load time; every problem is reported
with its path (``tiers[2].accept.min_confidence: ...``) so a user fixes them all
in one pass.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.lifecycle import Verdict
from workers.pipeline_checks import NAME_RE, cross_checks

PROVIDERS = ("anthropic", "bedrock", "vertex")
Provider = Literal["anthropic", "bedrock", "vertex"]
# How a Claude tier obtains a structured answer; "auto" picks per model (see prices.toml).
Structured = Literal["auto", "forced_tool", "tool", "json_schema"]
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class PipelineError(ValueError):
    """The pipeline file cannot be used; ``problems`` lists every reason with its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid pipeline {source}:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    max_text_chars: int = Field(default=20_000, ge=1, le=1_000_000)


class Rule(_Strict):
    pattern: str
    label: str
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


NEVER = "never"  # a label's threshold that no answer reaches: never accepted at this tier
LabelThreshold = Annotated[float, Field(ge=0.0, le=1.0)] | Literal["never"]
# What a model tier does with a refusal: its fallback chain (as before), the next tier,
# the human review queue, or a label ("label:unsafe": the refusal is the signal).
REFUSAL_RE = re.compile(r"^(fallback|escalate|review|label:[a-z0-9][a-z0-9_\-]{0,63})$")


class AcceptPolicy(_Strict):
    min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    reject_hedging: bool = True
    # per label, instead of min_confidence (`cascade tune --max-error` writes it); "never":
    # an answer with that label always escalates (no threshold could be certified)
    min_confidence_by_label: dict[str, LabelThreshold] = {}
    # last tier only: an answer below this confidence goes to human review
    review_below: float | None = Field(default=None, ge=0.0, le=1.0)

    def threshold(self, label: str) -> float | None:
        """The confidence an answer with ``label`` needs to be kept; None: never kept."""
        value = self.min_confidence_by_label.get(label, self.min_confidence)
        return None if value == NEVER else float(value)


class ModelRef(_Strict):
    provider: Provider = "anthropic"
    model: str = Field(min_length=1)

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.model}"


def _matching(field: str, pattern: re.Pattern[str], hint: str) -> Any:
    """A validator of a model's ``field``: a value ``pattern`` does not match is refused,
    the problem saying ``hint``."""

    def check(cls: type[BaseModel], value: str) -> str:
        if not pattern.match(value):
            raise ValueError(hint)
        return value

    return field_validator(field)(classmethod(check))


def _model_ref(value: Any) -> Any:
    """Accept ``"model"``, ``"provider:model"`` or a table."""
    if isinstance(value, str):
        provider, sep, model = value.partition(":")
        return {"provider": provider, "model": model} if sep else {"model": value}
    return value


class Consistency(_Strict):
    """Other models must agree before an answer is kept.

    When the tier would accept, each model in ``models`` classifies the item too
    (the same prompt; a model may appear twice, or be the tier's own model). The
    answer is kept only if the share of those answers with the same label is at
    least ``min_agree``; an extra call that fails or answers badly does not agree.
    (Sampling parameters are rejected by new models, so "k samples" means k models.)
    """

    models: list[ModelRef] = Field(min_length=1, max_length=5)
    min_agree: float = Field(default=1.0, ge=0.0, le=1.0)

    @field_validator("models", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        return [_model_ref(v) for v in value] if isinstance(value, list) else value


class Verifier(_Strict):
    """A model judges the proposed label: kept only if "correct" with enough confidence."""

    model: str = Field(min_length=1)
    provider: Provider = "anthropic"
    min_confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    max_tokens: int = Field(default=200, ge=16, le=8192)

    @property
    def ref(self) -> ModelRef:
        return ModelRef(provider=self.provider, model=self.model)


class ModelAcceptPolicy(AcceptPolicy):
    """A model tier's policy: the thresholds, plus optional checks run before accepting."""

    consistency: Consistency | None = None
    verifier: Verifier | None = None

    @property
    def check_links(self) -> list[ModelRef]:
        """Every model the checks may call for one item, in call order."""
        links = list(self.consistency.models) if self.consistency else []
        return links + ([self.verifier.ref] if self.verifier else [])


class RulesTier(_Strict):
    name: str
    kind: Literal["rules"]
    rules: list[Rule] = Field(min_length=1)
    accept: AcceptPolicy = AcceptPolicy(min_confidence=0.0, reject_hedging=False)
    # this share of the items the tier accepts is also sent to the next tier (shadow)
    shadow_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class LocalTier(_Strict):
    """A classifier trained by `cascade train-local`, run on the worker's CPU at no API cost."""

    name: str
    kind: Literal["local"]
    model_path: str = Field(min_length=1)  # the directory train-local wrote
    accept: AcceptPolicy = AcceptPolicy(min_confidence=0.9, reject_hedging=False)
    shadow_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class ClaudeTier(_Strict):
    name: str
    kind: Literal["claude"]
    model: str = Field(min_length=1)
    provider: Provider = "anthropic"
    fallbacks: list[Annotated[ModelRef, Field()]] = []
    max_tokens: int = Field(default=256, ge=16, le=8192)
    structured: Structured = "auto"
    accept: ModelAcceptPolicy = ModelAcceptPolicy()
    # Shadow sampling: this share of the items the tier accepts is also sent to the next
    # tier's primary, recorded as role "shadow" (calibration spend; never changes an item).
    shadow_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # fallback | escalate | review | label:NAME (see REFUSAL_RE)
    on_refusal: str = Verdict.FALLBACK.value
    # "batch": this tier's calls go through the Message Batches API (half price, results
    # within 24 h); the items wait under a long lease while a poll task collects them.
    mode: Literal["realtime", "batch"] = "realtime"
    # first poll of a submitted batch after this many seconds; later polls back off
    poll_seconds: float = Field(default=30.0, gt=0, le=1800)
    # Prompt caching of the stable prefix (answer tool, system prompt): "auto" marks it
    # when it reaches the model's minimum cacheable length; "off" never marks it.
    cache: Literal["auto", "off"] = "auto"
    # How long a written prefix lives; unset: "5m" on a realtime tier, "1h" on a batch tier.
    cache_ttl: Literal["5m", "1h"] | None = None

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        return [_model_ref(v) for v in value] if isinstance(value, list) else value

    _refusal = _matching(
        "on_refusal", REFUSAL_RE, 'use "fallback", "escalate", "review" or "label:NAME"'
    )

    @property
    def primary(self) -> ModelRef:
        return ModelRef(provider=self.provider, model=self.model)

    @property
    def ttl(self) -> Literal["5m", "1h"]:
        """The cache TTL this tier writes with: its own, else 1h for batch, 5m for realtime."""
        if self.cache_ttl is not None:
            return self.cache_ttl
        return "1h" if self.mode == "batch" else "5m"

    @property
    def chain(self) -> list[ModelRef]:
        """The primary, then every fallback, in order."""
        return [self.primary, *self.fallbacks]


Tier = Annotated[RulesTier | LocalTier | ClaudeTier, Field(discriminator="kind")]


class Example(_Strict):
    """A worked example, rendered into the stable (cached) part of the prompt."""

    text: str = Field(min_length=1, max_length=20_000)
    label: str
    why: str | None = Field(default=None, max_length=2_000)


class Pipeline(_Strict):
    name: str
    labels: list[str] = Field(min_length=2)
    instructions: str = Field(min_length=1)
    limits: Limits = Limits()
    tiers: list[Tier] = Field(min_length=1)
    # Moderation text is sensitive: false drops each item's text once it is classified.
    store_text: bool = True
    # Spend cap for this pipeline per UTC day, across all its jobs (nightly backfills).
    daily_budget_usd: Decimal | None = Field(default=None, ge=0)
    # Send an item to human review when two tiers disagree on it: the last tier's answer
    # against the lower tier's, or an accepted answer against its shadow sample.
    review_on_disagreement: bool = False
    # Worked examples, rendered after the instructions (part of the cached prefix).
    examples: list[Example] = Field(default=[], max_length=200)
    # A text is classified once per pipeline version: a repeat takes the decision of the
    # item it repeats (in this job; in earlier jobs too within ``reuse_days`` days).
    reuse: bool = True
    reuse_days: int = Field(default=0, ge=0, le=3650)

    _name = _matching("name", NAME_RE, "use lowercase letters, digits, '-' or '_' (at most 40)")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not LABEL_RE.match(v)]
        if bad:
            raise ValueError(f"labels must be lowercase identifiers, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        return value

    def tier_index(self, name: str) -> int:
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        raise KeyError(name)

    @property
    def queues(self) -> list[str]:
        return [f"tier.{t.name}" for t in self.tiers]


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i == 2 and loc[0] == "tiers" and part in ("rules", "local", "claude"):
            continue  # the discriminator's tag right after tiers[i] adds nothing to the path
        else:
            out += f".{part}" if out else str(part)
    return out


def _keys() -> set[str]:
    """Every key a pipeline file may hold, at any depth."""
    found: set[str] = set()
    todo: list[type] = [_Strict]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        found |= set(getattr(cls, "model_fields", {}))
    return found


def _did_you_mean(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(_keys()), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _problems(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        where = _loc(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(str(err["loc"][-1]))
        problems.append(f"{where}: {msg}" if where else msg)
    return problems


def parse_pipeline(data: dict[str, Any], source: str = "<pipeline>") -> Pipeline:
    """Validate a pipeline; every field problem and every cross-field problem is reported."""
    problems = cross_checks(data)
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc) + problems
    if problems:
        raise PipelineError(source, problems)
    return pipeline


def _read_instructions(path: Path, data: dict[str, Any]) -> list[str]:
    """Resolve ``instructions_file`` (relative to the pipeline file) into ``instructions``.

    The file's text is appended to any inline ``instructions``, so the job stores the
    whole policy and a worker on another machine never needs the file.
    """
    name = data.pop("instructions_file", None)
    if name is None:
        return []
    if not isinstance(name, str) or not name.strip():
        return ["instructions_file: must be a file name"]
    where = path.parent / name
    try:
        text = where.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return [f"instructions_file: cannot read {where}: {reason}"]
    if not text:
        return [f"instructions_file: {where} is empty"]
    inline = data.get("instructions")
    head = inline.strip() if isinstance(inline, str) else ""
    data["instructions"] = f"{head}\n\n{text}" if head else text
    return []


def load_pipeline(path: Path) -> Pipeline:
    """Read and validate a pipeline TOML file; raise :class:`PipelineError` on any problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PipelineError(str(path), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PipelineError(str(path), [f"not valid TOML: {exc}"]) from None
    problems = _read_instructions(path, data)
    if problems:
        raise PipelineError(str(path), problems)
    return parse_pipeline(data, str(path))
