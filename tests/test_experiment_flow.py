"""Experiments over HTTP: the arm comes from the subscription (every link and worker the same), the holdout
sees no offer, and the experiment page's numbers equal a hand computation on a seeded history."""

import json
import secrets
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from cancel_flow.experiments import assign_arm
from cancel_flow.models import CancelSession
from tests.helpers import load_config
from tests.helpers import HALF_PRICE_OFFER, PAUSE_OFFER, arm_tables, csrf_of
from tests.test_dashboard import PASSWORD, sign_in  # noqa: F401
from tests.test_dashboard import coach  # noqa: F401  (fixture)

OFFERS = """
[brand]
name = "Coach"
""" + HALF_PRICE_OFFER + PAUSE_OFFER + """[[experiment]]
id = "discount-vs-holdout"
start = "2026-01-01"
optimise = "save_rate"
reasons = ["unused"]
min_sessions_per_arm = 20
""" + arm_tables(("discount", ["half"], 50), ("holdout", [], 50))


@pytest.fixture
def offers_file(tmp_path):
    path = tmp_path / "offers.toml"
    path.write_text(OFFERS)
    return path


def arm_session(index: int, experiment_id: str, arm: str, outcome: str, created: datetime) -> dict:
    """A session of the experiment's `arm` on a $49 monthly plan, for the reason "unused", decided when it started
    (unless still open)."""
    return dict(nonce=secrets.token_hex(8), customer_id=f"cus_{index}", subscription_id=f"sub_{index}",
                customer_email=None, plan_name="Coaching", price_amount=4900, interval="month", interval_count=1,
                monthly_amount=4900, currency="usd", outcome=outcome, created_at=created, updated_at=created,
                decided_at=created if outcome != "open" else None,
                canceled_at=created if outcome == "canceled" else None, reason="unused",
                experiment_id=experiment_id, experiment_arm=arm, superseded=False, claim_attempt=0)


def signed_in_pages(client, now: datetime, *paths: str) -> list:
    """The coach's pages at `paths`, signed in at the moment `now`."""
    with freeze_time(now):
        sign_in(client)
        return [client.get(path) for path in paths]


def give_reason(client, url, reason="unused"):
    page = client.get(url)
    client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": reason})
    return client.get(url).text


def test_the_arm_is_the_subscriptions_on_every_link_and_worker_and_the_holdout_sees_no_offer(
        make_client, catalogue, signer, store, offers_file):
    workers = [make_client(offers_path=offers_file), make_client(offers_path=offers_file)]
    experiment = load_config(offers_file).experiments[0]
    arms = set()
    for index in range(8):
        sub = catalogue.subscription(catalogue.customer(email=f"c{index}@example.com"))
        expected = assign_arm(experiment, sub.id)
        arms.add(expected.name)
        pages = []
        for worker in workers:
            token, _ = signer.cancel_token(sub.customer, sub.id)
            pages.append(give_reason(worker, f"/cancel/{token}"))
        for page in pages:
            assert ("Stay for half price" in page) == (expected.name == "discount")
            assert "Take a break" not in page  # the arm's offers replace the plain ones
            assert "Continue to cancel" in page
        with store.engine.connect() as connection:
            stored = connection.execute(sa.select(CancelSession.__table__.c.experiment_arm)
                                        .where(CancelSession.__table__.c.subscription_id == sub.id)).scalars().all()
        assert stored == [expected.name, expected.name]
    assert arms == {"discount", "holdout"}  # both arms were drawn in 8 subscriptions
    # another reason is outside the experiment: the plain offers
    sub = catalogue.subscription(catalogue.customer(email="other@example.com"))
    token, _ = signer.cancel_token(sub.customer, sub.id)
    assert "Take a break" in give_reason(workers[0], f"/cancel/{token}", "other")


def test_the_experiment_page_shows_the_hand_computed_numbers(make_client, store, offers_file, coach):  # noqa: F811
    now = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    # discount arm: 12 sessions, 6 saved, 3 canceled, 3 undecided; holdout: 10 sessions, 2 saved, 6 canceled
    plan = [("discount", "saved_discount")] * 6 + [("discount", "canceled")] * 3 + [("discount", "deflected")] * 3 + \
           [("holdout", "saved_keep")] * 2 + [("holdout", "canceled")] * 6 + [("holdout", "open")] * 2
    store.bulk_insert_sessions([arm_session(index, "discount-vs-holdout", arm, outcome, now - timedelta(days=100 - index))
                                for index, (arm, outcome) in enumerate(plan)])
    [page] = signed_in_pages(make_client(offers_path=offers_file), now, "/dashboard/experiments/discount-vs-holdout")
    assert page.status_code == 200
    text = page.text
    # save rate = saved / (saved + canceled): 6/9 = 66.7 %, 2/8 = 25.0 %
    assert "66.7%" in text and "25.0%" in text
    assert ">12<" in text and ">10<" in text  # sessions per arm
    assert "no offer (holdout)" in text and "Stay for half price" in text
    assert "Bayes factor" in text  # the stated rule


def test_the_same_figures_in_the_api_and_the_arm_in_the_csv(make_client, store, offers_file, coach, catalogue, signer):  # noqa: F811
    client = make_client(offers_path=offers_file)
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    give_reason(client, f"/cancel/{token}")
    arm = assign_arm(load_config(offers_file).experiments[0], sub.id).name
    from cancel_flow.store.api_keys import ApiKeyStore

    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("reader", key)
    api = make_client(offers_path=offers_file)
    api.headers["Authorization"] = f"Bearer {key}"
    body = api.get("/api/stats", params={"experiment": "discount-vs-holdout"}).json()
    arms = {a["name"]: a for a in body["experiment"]["arms"]}
    assert arms[arm]["sessions"] == 1 and body["experiment"]["verdict"]["kind"] == "keep_running"
    assert api.get("/api/stats", params={"experiment": "nope"}).status_code == 404
    sign_in(client)
    rows = client.get("/dashboard/export.csv").text.lstrip("\ufeff").splitlines()
    header = rows[0].split(",")
    line = next(r for r in rows[1:] if sub.id in r).split(",")
    assert line[header.index("experiment")] == "discount-vs-holdout" and line[header.index("experiment_arm")] == arm


def test_an_ended_experiment_keeps_its_history_readable(make_client, store, offers_file, coach):  # noqa: F811
    """Removed from offers.toml (its winner moved into the plain offers): the page still shows its arms."""
    now = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    store.bulk_insert_sessions([arm_session(i, "pause-trial", "pause" if i < 6 else "holdout",
                                            "saved_pause" if i % 2 else "canceled", now - timedelta(days=200))
                                for i in range(10)])
    page, listing = signed_in_pages(make_client(offers_path=offers_file), now, "/dashboard/experiments/pause-trial",
                                    "/dashboard/experiments")
    assert page.status_code == 200 and "no longer in offers.toml" in page.text
    assert '<th scope="row">pause' in page.text and '<th scope="row">holdout' in page.text  # both arms, as they ended
    assert "50.0%" in page.text  # pause arm: 3 saved of 6 decided
    assert "pause-trial" in listing.text and "discount-vs-holdout" in listing.text
