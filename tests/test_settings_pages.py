"""The settings pages over HTTP against the real app: every form saves a new version through the one
validator, a refusal shows the validator's message beside its field and changes nothing, every form needs
its CSRF token, a save made meanwhile is a 409, and the history compares and restores versions."""

import re

import pytest

from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from tests.helpers import csrf_of

PASSWORD = "correct horse battery"
COACH = "coach@example.com"
PAGES = ["/dashboard/settings", "/dashboard/settings/brand", "/dashboard/settings/offers",
         "/dashboard/settings/offers/new?kind=discount", "/dashboard/settings/offers/edit/pause",
         "/dashboard/settings/experiments", "/dashboard/settings/emails", "/dashboard/settings/alerts",
         "/dashboard/settings/history", "/dashboard/preview"]


@pytest.fixture
def coach_client(client, store):
    CoachStore(store.engine).add(COACH, hash_password(PASSWORD))
    page = client.get("/dashboard/login")
    signed = client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": COACH, "password": PASSWORD})
    assert signed.status_code == 303
    return client


@pytest.mark.parametrize("path", PAGES)
def test_every_settings_page_opens_for_a_coach_and_sends_others_to_sign_in(client, coach_client, path):
    page = coach_client.get(path)
    assert page.status_code == 200, page.text
    assert 'aria-current="page">Settings<' in page.text or path == "/dashboard/preview"
