from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workers.pipeline import (
    AcceptPolicy,
    ClaudeTier,
    ModelAcceptPolicy,
    ModelRef,
    PipelineError,
    RulesTier,
    load_pipeline,
    parse_pipeline,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TRIAGE = EXAMPLES / "support_triage.toml"
MODERATION = EXAMPLES / "moderation.toml"

Data = dict[str, Any]


def triage_data() -> Data:
    """A fresh, mutable copy of the support-triage pipeline as plain TOML data."""
    return tomllib.loads(TRIAGE.read_text(encoding="utf-8"))


def problems_of(data: Data) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(data, "test.toml")
    assert caught.value.source == "test.toml"
    return caught.value.problems


# ---------------------------------------------------------------------------------------
# The examples load
# ---------------------------------------------------------------------------------------


def test_support_triage_example_loads() -> None:
    pipeline = load_pipeline(TRIAGE)

    assert pipeline.name == "support-triage"
    assert pipeline.labels == ["billing", "technical", "account", "shipping", "feedback", "other"]
    assert pipeline.limits.max_text_chars == 4000
    assert [t.name for t in pipeline.tiers] == ["rules", "small", "large"]
    rules, small, large = pipeline.tiers
    assert isinstance(rules, RulesTier)
    assert len(rules.rules) == 8
    # a rules tier accepts any match by default
    assert rules.accept == AcceptPolicy(min_confidence=0.0, reject_hedging=False)
    assert isinstance(small, ClaudeTier)
    assert small.model == "claude-haiku-5-5"
    assert small.max_tokens == 200
    assert small.accept == ModelAcceptPolicy(min_confidence=0.8, reject_hedging=True)
    assert isinstance(large, ClaudeTier)
    assert large.accept == ModelAcceptPolicy(min_confidence=0.0, reject_hedging=False)


def test_moderation_example_loads() -> None:
    pipeline = load_pipeline(MODERATION)

    assert pipeline.name == "moderation"
    assert "self_harm" in pipeline.labels
    assert pipeline.limits.max_text_chars == 2000
    rules = pipeline.tiers[0]
    assert isinstance(rules, RulesTier)
    assert [r.confidence for r in rules.rules] == [1.0, 1.0, 1.0, 0.95]
    small = pipeline.tiers[1]
    assert isinstance(small, ClaudeTier)
    assert small.accept.min_confidence == 0.85


def test_parse_pipeline_accepts_the_same_data_as_load() -> None:
    assert parse_pipeline(triage_data()) == load_pipeline(TRIAGE)


def test_queues_name_one_queue_per_tier_in_order() -> None:
    assert load_pipeline(TRIAGE).queues == ["tier.rules", "tier.small", "tier.large"]


def test_tier_index_finds_tiers_by_name() -> None:
    pipeline = load_pipeline(TRIAGE)

    assert [pipeline.tier_index(n) for n in ("rules", "small", "large")] == [0, 1, 2]
    with pytest.raises(KeyError):
        pipeline.tier_index("medium")


def test_chain_is_primary_then_fallbacks_in_order() -> None:
    # Given a tier with a primary on bedrock and three fallbacks
    data = triage_data()
    data["tiers"][1]["provider"] = "bedrock"
    data["tiers"][1]["fallbacks"] = ["claude-haiku-4-5", "vertex:claude-opus-5-5", "claude-x"]

    # When it is parsed
    tier = parse_pipeline(data).tiers[1]

    # Then the chain starts with the primary (with its own provider) and keeps the order
    assert isinstance(tier, ClaudeTier)
    assert tier.primary == ModelRef(provider="bedrock", model="claude-haiku-5-5")
    assert [link.key for link in tier.chain] == [
        "bedrock:claude-haiku-5-5",
        "anthropic:claude-haiku-4-5",
        "vertex:claude-opus-5-5",
        "anthropic:claude-x",
    ]


FALLBACK_FORMS = [
    # a bare model name uses the default provider
    ("claude-haiku-4-5", ModelRef(provider="anthropic", model="claude-haiku-4-5")),
    # "provider:model" names the provider
    ("bedrock:claude-haiku-4-5", ModelRef(provider="bedrock", model="claude-haiku-4-5")),
    # only the first ':' separates: a Bedrock id keeps its own ':' (the "-v1:0" suffix)
    (
        "bedrock:anthropic.claude-haiku-4-5-20251001-v1:0",
        ModelRef(provider="bedrock", model="anthropic.claude-haiku-4-5-20251001-v1:0"),
    ),
    # a table with both keys
    (
        {"provider": "vertex", "model": "claude-haiku-4-5@20251001"},
        ModelRef(provider="vertex", model="claude-haiku-4-5@20251001"),
    ),
    # a table without a provider uses the default provider
    ({"model": "claude-opus-5-5"}, ModelRef(provider="anthropic", model="claude-opus-5-5")),
]


@pytest.mark.parametrize(("given", "expected"), FALLBACK_FORMS)
def test_fallback_forms(given: object, expected: ModelRef) -> None:
    data = triage_data()
    data["tiers"][1]["fallbacks"] = [given]

    tier = parse_pipeline(data).tiers[1]

    assert isinstance(tier, ClaudeTier)
    assert tier.fallbacks == [expected]


def test_pipeline_is_frozen() -> None:
    pipeline = load_pipeline(TRIAGE)

    with pytest.raises(ValueError, match="frozen"):
        pipeline.name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Invalid pipelines: each problem is reported with its path
# ---------------------------------------------------------------------------------------


def _set(*path: str | int, value: object) -> Callable[[Data], None]:
    def mutate(data: Data) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(key: str) -> Callable[[Data], None]:
    def mutate(data: Data) -> None:
        del data[key]

    return mutate


def _append_rules_tier(data: Data) -> None:
    data["tiers"].append(
        {
            "name": "late-rules",
            "kind": "rules",
            "rules": [copy.deepcopy(data["tiers"][0]["rules"][0])],
        }
    )


INVALID = [
    # min_confidence above 1
    pytest.param(
        _set("tiers", 2, "accept", "min_confidence", value=1.5),
        "tiers[2].accept.min_confidence: Input should be less than or equal to 1",
        id="min-confidence-above-1",
    ),
    # min_confidence below 0
    pytest.param(
        _set("tiers", 2, "accept", "min_confidence", value=-0.1),
        "tiers[2].accept.min_confidence: Input should be greater than or equal to 0",
        id="min-confidence-below-0",
    ),
    # an unknown top-level key is an error, not ignored
    pytest.param(_set("colour", value="blue"), "colour: unknown key", id="unknown-top-key"),
    # an unknown key inside a tier names the tier
    pytest.param(
        _set("tiers", 1, "temperature", value=0),
        "tiers[1].temperature: unknown key",
        id="unknown-tier-key",
    ),
    # an unknown key inside [tiers.accept]
    pytest.param(
        _set("tiers", 1, "accept", "strict", value=True),
        "tiers[1].accept.strict: unknown key",
        id="unknown-accept-key",
    ),
    # a regex that does not compile, with the path of the rule
    pytest.param(
        _set("tiers", 0, "rules", 1, "pattern", value="(unclosed"),
        "tiers[0].rules[1].pattern: not a valid regular expression: "
        "missing ), unterminated subpattern at position 0",
        id="bad-regex",
    ),
    # a rule's label must be one of the pipeline's labels
    pytest.param(
        _set("tiers", 0, "rules", 1, "label", value="refunds"),
        "tiers[0].rules[1].label: 'refunds' is not one of the labels",
        id="rule-label-not-in-labels",
    ),
    # a rule confidence outside 0..1
    pytest.param(
        _set("tiers", 0, "rules", 3, "confidence", value=2),
        "tiers[0].rules[3].confidence: Input should be less than or equal to 1",
        id="rule-confidence-above-1",
    ),
    # two tiers may not share a name (it names their queue)
    pytest.param(
        _set("tiers", 2, "name", value="small"),
        "tiers[2].name: duplicate tier name 'small'",
        id="duplicate-tier-name",
    ),
    # a tier name must be a lowercase identifier
    pytest.param(
        _set("tiers", 1, "name", value="Small Model"),
        "tiers[1].name: use lowercase letters, digits, '-' or '_'",
        id="bad-tier-name",
    ),
    # the last tier must always answer, so it cannot be a rules tier
    pytest.param(
        _append_rules_tier,
        "tiers[3]: the last tier must be a model tier (it always answers)",
        id="last-tier-is-rules",
    ),
    # an unknown provider in a "provider:model" fallback
    pytest.param(
        _set("tiers", 1, "fallbacks", value=["azure:claude-haiku-4-5"]),
        "tiers[1].fallbacks[0].provider: Input should be 'anthropic', 'bedrock' or 'vertex'",
        id="unknown-fallback-provider",
    ),
    # an unknown provider in a table fallback, second in the list
    pytest.param(
        _set("tiers", 2, "fallbacks", value=["claude-opus-5-5", {"provider": "gcp", "model": "m"}]),
        "tiers[2].fallbacks[1].provider: Input should be 'anthropic', 'bedrock' or 'vertex'",
        id="unknown-fallback-provider-table",
    ),
    # "anthropic:" names no model
    pytest.param(
        _set("tiers", 1, "fallbacks", value=["anthropic:"]),
        "tiers[1].fallbacks[0].model: String should have at least 1 character",
        id="fallback-without-model",
    ),
    # an unknown provider for the primary
    pytest.param(
        _set("tiers", 1, "provider", value="openai"),
        "tiers[1].provider: Input should be 'anthropic', 'bedrock' or 'vertex'",
        id="unknown-primary-provider",
    ),
    # labels must be unique
    pytest.param(
        _set("labels", value=["billing", "account", "billing"]),
        "labels: labels must be unique",
        id="duplicate-labels",
    ),
    # labels are lowercase identifiers
    pytest.param(
        _set("labels", value=["Billing", "account"]),
        "labels: labels must be lowercase identifiers, got ['Billing']",
        id="bad-label",
    ),
    # one label is no choice
    pytest.param(
        _set("labels", value=["billing"]),
        "labels: List should have at least 2 items after validation, not 1",
        id="one-label",
    ),
    # labels are required
    pytest.param(_drop("labels"), "labels: Field required", id="missing-labels"),
    # instructions are required
    pytest.param(_drop("instructions"), "instructions: Field required", id="missing-instructions"),
    # at least one tier
    pytest.param(
        _set("tiers", value=[]),
        "tiers: List should have at least 1 item after validation, not 0",
        id="no-tiers",
    ),
    # an unknown tier kind
    pytest.param(
        _set("tiers", 1, "kind", value="gpt"),
        "tiers[1]: Input tag 'gpt' found using 'kind' does not match any of the expected "
        "tags: 'rules', 'local', 'claude'",
        id="unknown-kind",
    ),
    # max_tokens below the floor
    pytest.param(
        _set("tiers", 1, "max_tokens", value=5),
        "tiers[1].max_tokens: Input should be greater than or equal to 16",
        id="max-tokens-too-small",
    ),
    # an unknown structured mechanism
    pytest.param(
        _set("tiers", 1, "structured", value="xml"),
        "tiers[1].structured: Input should be 'auto', 'forced_tool', 'tool' or 'json_schema'",
        id="unknown-structured",
    ),
    # the pipeline name must be an identifier
    pytest.param(
        _set("name", value="Support Triage"),
        "name: use lowercase letters, digits, '-' or '_' (at most 40)",
        id="bad-pipeline-name",
    ),
    # limits must be positive
    pytest.param(
        _set("limits", "max_text_chars", value=0),
        "limits.max_text_chars: Input should be greater than or equal to 1",
        id="zero-max-text-chars",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), INVALID)
def test_invalid_pipeline_reports_the_problem_with_its_path(
    mutate: Callable[[Data], None], expected: str
) -> None:
    data = triage_data()
    mutate(data)

    problems = problems_of(data)

    assert expected in problems


def test_pipeline_error_message_lists_every_problem() -> None:
    error = PipelineError("p.toml", ["a: one", "b: two"])

    assert str(error) == "invalid pipeline p.toml:\n  - a: one\n  - b: two"


def test_several_field_problems_are_all_reported() -> None:
    # Given three unrelated field problems in one file
    data = triage_data()
    data["colour"] = "blue"
    data["tiers"][2]["accept"]["min_confidence"] = 2
    data["tiers"][1]["fallbacks"] = ["azure:x"]

    # When it is parsed
    problems = problems_of(data)

    # Then all three are reported, one line each
    assert sorted(problems) == sorted(
        [
            "colour: unknown key",
            "tiers[2].accept.min_confidence: Input should be less than or equal to 1",
            "tiers[1].fallbacks[0].provider: Input should be 'anthropic', 'bedrock' or 'vertex'",
        ]
    )


def test_several_cross_check_problems_are_all_reported() -> None:
    # Given two rule labels outside the label set, a duplicate tier name and a rules tier last
    data = triage_data()
    data["tiers"][0]["rules"][1]["label"] = "nope"
    data["tiers"][0]["rules"][2]["label"] = "nope2"
    data["tiers"][2]["name"] = "small"
    _append_rules_tier(data)

    # When it is parsed
    problems = problems_of(data)

    # Then each is its own problem, in file order
    assert problems == [
        "tiers[0].rules[1].label: 'nope' is not one of the labels",
        "tiers[0].rules[2].label: 'nope2' is not one of the labels",
        "tiers[2].name: duplicate tier name 'small'",
        "tiers[3]: the last tier must be a model tier (it always answers)",
    ]


def test_field_and_cross_check_problems_are_reported_together() -> None:
    # Given a field problem and a cross-check problem in one file
    data = triage_data()
    data["tiers"][2]["accept"]["min_confidence"] = 2
    data["tiers"][0]["rules"][1]["label"] = "nope"

    # When it is parsed
    problems = problems_of(data)

    # Then both are reported in one pass
    assert "tiers[2].accept.min_confidence: Input should be less than or equal to 1" in problems
    assert "tiers[0].rules[1].label: 'nope' is not one of the labels" in problems


def test_a_problem_containing_a_semicolon_is_not_split() -> None:
    data = triage_data()
    data["tiers"][0]["rules"][1]["label"] = "a; b"

    assert problems_of(data) == ["tiers[0].rules[1].label: 'a; b' is not one of the labels"]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"

    with pytest.raises(PipelineError) as caught:
        load_pipeline(missing)

    assert caught.value.source == str(missing)
    assert caught.value.problems == ["cannot read the file: No such file or directory"]


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nlabels = [\n', encoding="utf-8")

    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)

    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("not valid TOML: ")


def test_not_utf8_is_reported_as_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))

    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)

    assert caught.value.problems[0].startswith("not valid TOML: ")


def test_file_problems_carry_the_file_path(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('colour = "blue"\n' + TRIAGE.read_text(encoding="utf-8"), encoding="utf-8")

    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)

    assert caught.value.source == str(path)
    assert caught.value.problems == ["colour: unknown key"]
    assert str(path) in str(caught.value)


# ---------------------------------------------------------------------------------------
# Moderation: per-label thresholds, review_below, on_refusal
# ---------------------------------------------------------------------------------------


def test_moderation_keys_load() -> None:
    data = triage_data()
    data["tiers"][1]["accept"]["min_confidence_by_label"] = {"billing": 0.95, "other": "never"}
    data["tiers"][1]["on_refusal"] = "label:other"
    data["tiers"][2]["accept"]["review_below"] = 0.5
    data["tiers"][2]["on_refusal"] = "review"
    data["review_on_disagreement"] = True
    pipeline = parse_pipeline(data)
    small, large = pipeline.tiers[1], pipeline.tiers[2]
    assert isinstance(small, ClaudeTier) and isinstance(large, ClaudeTier)
    assert small.accept.threshold("billing") == 0.95
    assert small.accept.threshold("other") is None
    assert small.accept.threshold("account") == small.accept.min_confidence
    assert large.accept.review_below == 0.5
    assert (small.on_refusal, large.on_refusal) == ("label:other", "review")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        # a threshold for a label the pipeline does not have
        (
            lambda d: d["tiers"][1]["accept"].update(min_confidence_by_label={"nope": 0.9}),
            "tiers[1].accept.min_confidence_by_label: ['nope'] are not among the labels",
        ),
        # the last tier always answers: its floor is review_below, not a threshold
        (
            lambda d: d["tiers"][2]["accept"].update(min_confidence_by_label={"billing": 0.9}),
            "tiers[2].accept.min_confidence_by_label: not allowed on the last tier",
        ),
        # review_below below the last tier would never be read
        (
            lambda d: d["tiers"][1]["accept"].update(review_below=0.5),
            "tiers[1].accept.review_below: only on the last tier",
        ),
        # the last tier cannot escalate a refusal
        (
            lambda d: d["tiers"][2].update(on_refusal="escalate"),
            "tiers[2].on_refusal: the last tier has no next tier",
        ),
        # a refusal label must be one of the labels
        (
            lambda d: d["tiers"][1].update(on_refusal="label:unsafe"),
            "tiers[1].on_refusal: 'label:unsafe' names no label",
        ),
        # an unknown policy
        (lambda d: d["tiers"][1].update(on_refusal="ignore"), "tiers[1].on_refusal: use"),
        # a rules tier: each rule says its own confidence
        (
            lambda d: d["tiers"][0].update(
                accept={"min_confidence": 1.0, "min_confidence_by_label": {"billing": 0.9}}
            ),
            "tiers[0].accept.min_confidence_by_label: a rules tier sets each rule's confidence",
        ),
        # the tiers must be a list of tables; the other checks still report
        (lambda d: d.update(tiers={"name": "x"}), "tiers: Input should be a valid list"),
    ],
)
def test_moderation_keys_are_checked(edit: Callable[[Data], Any], problem: str) -> None:
    data = triage_data()
    edit(data)
    assert any(p.startswith(problem) for p in problems_of(data)), problems_of(data)


# -- instructions_file ----------------------------------------------------------------

TIER = '[[tiers]]\nname = "t"\nkind = "claude"\nmodel = "claude-haiku-5-5"\n'


def _with_instructions_file(tmp_path: Path, head: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(f'name = "p"\nlabels = ["spam", "ok"]\n{head}\n{TIER}')
    return path


@pytest.mark.parametrize(
    ("head", "policy", "problem"),
    [
        # an empty name or a name that is not a string
        ('instructions_file = "  "', None, "instructions_file: must be a file name"),
        ("instructions_file = 3", None, "instructions_file: must be a file name"),
        # a file with nothing in it cannot be the policy
        ('instructions_file = "policy.md"', b"  \n\n", "policy.md is empty"),
        # a file in another encoding
        ('instructions_file = "policy.md"', b"caf\xe9", "policy.md: not UTF-8 text"),
        # a directory is no file
        ('instructions_file = "."', None, "instructions_file: cannot read "),
    ],
)
def test_instructions_file_problems(
    tmp_path: Path, head: str, policy: bytes | None, problem: str
) -> None:
    if policy is not None:
        (tmp_path / "policy.md").write_bytes(policy)

    with pytest.raises(PipelineError) as info:
        load_pipeline(_with_instructions_file(tmp_path, head))

    [reported] = info.value.problems
    assert problem in reported


def test_an_instructions_file_alone_is_the_instructions(tmp_path: Path) -> None:
    (tmp_path / "policy.md").write_text("\n  Spam is unsolicited advertising.  \n\n")

    pipeline = load_pipeline(_with_instructions_file(tmp_path, 'instructions_file = "policy.md"'))

    assert pipeline.instructions == "Spam is unsolicited advertising."


def test_an_instructions_file_is_found_beside_the_pipeline_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "policy.md").write_text("The policy beside the file.")
    (tmp_path / "policy.md").write_text("A policy in the working directory.")
    path = tmp_path / "conf" / "p.toml"
    path.write_text(f'name = "p"\nlabels = ["spam", "ok"]\ninstructions_file = "policy.md"\n{TIER}')
    monkeypatch.chdir(tmp_path)

    assert load_pipeline(Path("conf/p.toml")).instructions == "The policy beside the file."
