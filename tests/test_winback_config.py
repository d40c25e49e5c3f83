"""`[winback]` and `comeback_only` in the one validator: field-named refusals, defaults, TOML both ways, and a
comeback-only offer that the cancel flow never shows."""

from datetime import datetime, timezone

import pytest

from cancel_flow import flow
from cancel_flow.config.schema import Winback, WinbackStep
from cancel_flow.config.toml import read_toml, read_toml_file, to_toml
from cancel_flow.config.validate import validate
from cancel_flow.errors import InvalidConfig
from cancel_flow.flow import PriceLine, SubscriptionFacts
from tests.conftest import ROOT

SHIPPED = read_toml_file(ROOT / "offers.toml")
COMEBACK = {"id": "comeback-half", "kind": "discount", "percent_off": 50, "payments": 3,
            "title": "Come back for half price", "comeback_only": True}
WINBACK = {"changed_mind_days_before": 3, "step": [
    {"reasons": ["too_expensive"], "days_after": 30, "offer": "comeback-half"},
    {"reasons": ["unused", "other"], "days_after": 45},
]}


def document(**changes) -> dict:
    return {**SHIPPED, "offer": [*SHIPPED["offer"], COMEBACK], "winback": WINBACK, **changes}


def refusal(data) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as refused:
        validate(data, ROOT)
    return refused.value


def test_the_winback_section_reads_as_steps_numbered_in_their_order():
    config = validate(document(), ROOT)
    assert config.winback == Winback(3, (WinbackStep(1, 30, ("too_expensive",), "comeback-half"),
                                         WinbackStep(2, 45, ("unused", "other"), None)))
    assert config.find("comeback-half").comeback_only is True
    assert [s.number for s in config.winback.steps_for("too_expensive")] == [1]
    assert [s.number for s in config.winback.steps_for("low_quality")] == []


def test_without_a_winback_section_the_changed_mind_email_comes_3_days_before_and_there_are_no_steps():
    config = validate(SHIPPED, ROOT)
    assert config.winback == Winback(changed_mind_days_before=3, steps=())


def test_a_step_without_reasons_applies_to_every_reason_in_day_order():
    steps = {"step": [{"days_after": 60}, {"reasons": ["unused"], "days_after": 14}]}
    config = validate(document(winback=steps), ROOT)
    assert [(s.number, s.days_after) for s in config.winback.steps_for("unused")] == [(2, 14), (1, 60)]
    assert [s.number for s in config.winback.steps_for(None)] == [1]  # reason unknown: the every-reason steps


@pytest.mark.parametrize("winback, field, words", [
    ({"changed_mind_days_before": -1}, "winback.changed_mind_days_before", "0 to 60 (0 turns it off)"),
    ({"changed_mind_days_before": True}, "winback.changed_mind_days_before", "whole number"),
    ({"step": [{"days_after": 0}]}, "winback.step.1.days_after", "1 to 730"),
    ({"step": [{"days_after": 30}, {}]}, "winback.step.2.days_after", "1 to 730"),
    ({"step": [{"days_after": 30, "reasons": ["bored"]}]}, "winback.step.1.reasons", "too_expensive"),
    ({"step": [{"days_after": 30, "offer": "nope"}]}, "winback.step.1.offer", "discount"),
    ({"step": [{"days_after": 30, "offer": "pause"}]}, "winback.step.1.offer", "'pause' is a pause"),
    ({"step": [{"days_after": 30, "discount": 10}]}, "winback.step.1.discount", "unknown field 'discount'"),
    ({"step": {"days_after": 30}}, "winback.step", "[[winback.step]]"),
    ({"steps": []}, "winback.steps", "unknown field 'steps'"),
])
def test_a_winback_mistake_names_its_field(winback, field, words):
    refused = refusal(document(winback=winback))
    assert refused.field == field
    assert words in refused.message


@pytest.mark.parametrize("change, field, words", [
    ({**COMEBACK, "comeback_only": "yes"}, "offer.comeback-half.comeback_only", "true or false"),
    ({"id": "break", "kind": "pause", "max_payments": 2, "title": "Break", "comeback_only": True},
     "offer.break.comeback_only", "discount offers"),
])
def test_comeback_only_is_checked(change, field, words):
    refused = refusal(document(offer=[change], winback={}))
    assert refused.field == field and words in refused.message


def test_toml_export_and_import_keep_winback_and_comeback_only():
    original = document()
    text = to_toml(original)
    assert "[winback]\nchanged_mind_days_before = 3\n\n[[winback.step]]" in text
    assert "comeback_only = true" in text
    again = read_toml(text, "export")
    assert again == original
    assert validate(again, ROOT) == validate(original, ROOT)


def test_a_comeback_only_offer_is_never_shown_in_the_cancel_flow():
    config = validate(document(), ROOT)
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    facts = SubscriptionFacts(
        subscription_id="sub_1", customer_id="cus_1", customer_email=None, status="active", plan_name="Coaching",
        currency="usd", lines=(PriceLine(4900, 1, "month", 1),), has_discount=False, paused=False,
        cancel_at_period_end=False, period_end=datetime(2026, 12, 25, tzinfo=timezone.utc),
        anchor=datetime(2026, 11, 25, tzinfo=timezone.utc), next_payment=datetime(2026, 12, 25, tzinfo=timezone.utc))
    shown = flow.eligible_offers(config, "too_expensive", facts, now, accepted_offer_recently=False)
    assert "comeback-half" not in [offer.id for offer in shown]
    why = dict((offer.id, reason) for offer, reason in flow.explain(config, "too_expensive", facts, now,
                                                                   accepted_offer_recently=False))
    assert why["comeback-half"] == "kept for win-back emails (comeback_only)"
