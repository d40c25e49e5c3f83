"""What changed between two configuration versions, in the words the history page shows."""

from cancel_flow.config.diff import changes

OLD = {
    "brand": {"name": "Peak", "color": "#1f6feb", "logo": "static/logo.svg"},
    "rules": {"max_offers": 2},
    "offer": [{"id": "half", "kind": "discount", "percent_off": 50, "payments": 3, "title": "Half"},
              {"id": "pause", "kind": "pause", "max_payments": 3, "title": "Break", "when": {"interval": ["month"]}},
              {"id": "talk", "kind": "contact", "url": "mailto:a@b.co", "title": "Talk"}],
    "experiment": [{"id": "trial", "start": "2026-12-01", "arms": [{"name": "a", "offers": ["half"], "weight": 50},
                                                                  {"name": "b", "offers": [], "weight": 50}]}],
    "emails": {"failed_payment_days": [0, 3, 7]},
}


def test_every_kind_of_change_is_one_line_in_words():
    new = {
        "brand": {"name": "Peak", "color": "#0b5cd5", "logo": "upload:" + "ab" * 32},
        "rules": {"max_offers": 3},
        "offer": [{"id": "pause", "kind": "pause", "max_payments": 2, "title": "Break", "enabled": False,
                   "when": {"interval": ["month", "year"], "currency": ["usd"]}},
                  {"id": "half", "kind": "discount", "percent_off": 50.0, "payments": 3, "title": "Half"},
                  {"id": "month", "kind": "free_period", "months": 1, "title": "A month on us"}],
        "experiment": [{"id": "trial", "start": "2026-12-01", "end": "2026-12-20",
                        "arms": [{"name": "a", "offers": ["half"], "weight": 50}, {"name": "b", "offers": [], "weight": 50}]}],
        "emails": {"failed_payment_days": []},
        "alerts": {"email": "coach@example.com"},
    }
    assert changes(OLD, new) == [
        "brand: color #1f6feb → #0b5cd5",
        "brand: logo static/logo.svg → an uploaded logo (abababab…)",
        "rules: max_offers 2 → 3",
        "offer 'pause' turned off",
        "offer 'pause': max_payments 3 → 2",
        "offer 'pause': when.interval month → month, year",
        "offer 'pause': when.currency (not set) → usd",
        "offer 'month' added (free_period: A month on us)",
        "offer 'talk' deleted",
        "offers' order: half, pause → pause, half",
        "experiment 'trial' ended on 2026-12-20",
        "emails: failed_payment_days 0, 3, 7 → none",
        "alerts: email (not set) → coach@example.com",
    ]


def test_the_same_document_has_no_change_and_a_restore_reads_as_the_way_back():
    assert changes(OLD, OLD) == []
    edited = {**OLD, "rules": {"max_offers": 1}}
    assert changes(edited, OLD) == ["rules: max_offers 1 → 2"]


def test_win_back_steps_compare_by_their_place_and_compliance_field_by_field():
    old = {"winback": {"changed_mind_days_before": 3, "step": [
        {"reasons": ["too_expensive"], "days_after": 30, "offer": "half"}, {"days_after": 60}]},
        "compliance": {"withdrawal_days": 14}}
    new = {"winback": {"changed_mind_days_before": 0, "step": [{"reasons": ["too_expensive", "unused"], "days_after": 45}]},
           "compliance": {"withdrawal_days": 0, "cancel_button": True}}
    assert changes(old, new) == [
        "winback: changed_mind_days_before 3 → 0",
        "winback step 1: reasons too_expensive → too_expensive, unused",
        "winback step 1: days_after 30 → 45",
        "winback step 1: offer half → (not set)",
        "winback step 2 removed (60 days after, for every reason, no offer)",
        "compliance: withdrawal_days 14 → 0",
        "compliance: cancel_button (not set) → on",
    ]
    assert changes(new, old)[-3:] == ["winback step 2 added (60 days after, for every reason, no offer)",
                                      "compliance: withdrawal_days 0 → 14", "compliance: cancel_button on → (not set)"]
