"""The team page: invitations by email (or a link shown once without SMTP), accepting one, roles, removal that
ends sessions at once, the last owner kept, and the first owner of a new deployment made without a terminal."""

import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from cancel_flow.models import AuditEntry
from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from tests.conftest import SECRET
from tests.helpers import csrf_of

PASSWORD = "correct horse battery"
OWNER_EMAIL = "owner@example.com"
INVITE_LINK = re.compile(r'value="(http://testserver/dashboard/invite/[^"]+)"')


def sign_in(client, email=OWNER_EMAIL, password=PASSWORD):
    page = client.get("/dashboard/login")
    return client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": password})


def audit_actions(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        table = AuditEntry.__table__
        return [tuple(row) for row in connection.execute(
            sa.select(table.c.actor, table.c.action, table.c.detail).order_by(table.c.id))]


@pytest.fixture
def coaches(store):
    return CoachStore(store.engine)


@pytest.fixture
def owner(make_client, coaches):
    coaches.add(OWNER_EMAIL, hash_password(PASSWORD), "owner")
    browser = make_client()
    assert sign_in(browser).status_code == 303
    return browser


def invite(browser, email: str, role: str = "editor"):
    page = browser.get("/dashboard/team")
    return browser.post("/dashboard/team/invite", data={"csrf_token": csrf_of(page.text), "email": email, "role": role})


def post_team(browser, action: str, **fields):
    page = browser.get("/dashboard/team")
    return browser.post(f"/dashboard/team/{action}", data={"csrf_token": csrf_of(page.text), **fields})


def accept(client, link: str, password: str = PASSWORD, again: str | None = None):
    path = link.removeprefix("http://testserver")
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(path, data={"csrf_token": csrf_of(page.text), "password": password,
                                   "password_again": password if again is None else again})


def test_invite_accept_and_sign_in_without_smtp_shows_the_link_once(owner, make_client, coaches, store):
    invited = invite(owner, "New.Person@example.com", "editor")
    assert invited.status_code == 200 and "Email is not set up" in invited.text and "shown only now" in invited.text
    link = INVITE_LINK.search(invited.text).group(1)
    page = owner.get("/dashboard/team")
    assert link not in page.text and "new.person@example.com" in page.text and "Invitations not yet accepted" in page.text
    assert CoachStore(store.engine).find("new.person@example.com") is None

    newcomer = make_client()
    assert "invited as <strong>editor</strong>" in newcomer.get(link.removeprefix("http://testserver")).text
    assert accept(newcomer, link, again="something else entirely").status_code == 400
    assert accept(newcomer, link, password="short").status_code == 400
    joined = accept(newcomer, link)
    assert joined.status_code == 303 and joined.headers["location"] == "/dashboard"
    assert newcomer.get("/dashboard").status_code == 200
    assert coaches.find("new.person@example.com").role == "editor"
    assert newcomer.get("/dashboard/team").status_code == 403  # editors don't manage the team

    # single use: the same link again, from anywhere, is gone
    again = make_client().get(link.removeprefix("http://testserver"))
    assert again.status_code == 410 and "no longer works" in again.text
    stranger = make_client()
    assert sign_in(stranger, "new.person@example.com").status_code == 303
    assert [action for _, action, _ in audit_actions(store.engine)] == ["team.invited", "team.joined"]
    assert audit_actions(store.engine)[1][0] == "new.person@example.com"


def test_an_invitation_is_mailed_with_smtp_and_expires_after_72_hours(make_client, coaches, inbox, store):
    coaches.add(OWNER_EMAIL, hash_password(PASSWORD), "owner")
    owner = make_client(smtp_url=inbox.url)
    with freeze_time("2026-11-24 10:00:00", real_asyncio=True) as frozen:
        sign_in(owner)
        sent = invite(owner, "viewer@example.com", "viewer")
        assert sent.status_code == 200 and "Invitation sent to" in sent.text and "/dashboard/invite/" not in sent.text
        [mail] = inbox.messages
        assert mail["To"] == "viewer@example.com" and "owner@example.com invited you" in mail.get_body(("plain",)).get_content()
        link = re.search(r"http://testserver/dashboard/invite/\S+", mail.get_body(("plain",)).get_content()).group(0)
        frozen.tick(timedelta(hours=71, minutes=59))
        assert make_client().get(link.removeprefix("http://testserver")).status_code == 200
        frozen.tick(timedelta(minutes=2))
        assert make_client().get(link.removeprefix("http://testserver")).status_code == 410
    assert coaches.find("viewer@example.com") is None


def test_a_new_invitation_replaces_the_earlier_one_and_canceling_ends_it(owner, make_client, store):
    first = INVITE_LINK.search(invite(owner, "twice@example.com").text).group(1)
    second = INVITE_LINK.search(invite(owner, "twice@example.com", "viewer").text).group(1)
    assert make_client().get(first.removeprefix("http://testserver")).status_code == 410
    assert post_team(owner, "invites/cancel", email="twice@example.com").status_code == 303
    assert make_client().get(second.removeprefix("http://testserver")).status_code == 410
    assert invite(owner, OWNER_EMAIL).status_code == 409  # on the team already
    assert invite(owner, "not an email").status_code == 400
    assert invite(owner, "x@example.com", "admin").status_code == 400


def test_the_last_owner_can_be_neither_removed_nor_demoted(owner, coaches, store):
    before = audit_actions(store.engine)
    page = owner.get("/dashboard/team")
    assert "The last owner" in page.text
    removed = post_team(owner, "remove", email=OWNER_EMAIL)
    assert removed.status_code == 409 and "last owner" in removed.text
    demoted = post_team(owner, "role", email=OWNER_EMAIL, role="editor")
    assert demoted.status_code == 409 and "last owner" in demoted.text
    assert coaches.find(OWNER_EMAIL).role == "owner" and audit_actions(store.engine) == before
    assert owner.get("/dashboard/team").status_code == 200

    coaches.add("second@example.com", hash_password(PASSWORD), "owner")
    assert post_team(owner, "role", email=OWNER_EMAIL, role="viewer").headers["location"] == "/dashboard"
    assert owner.get("/dashboard/team").status_code == 403  # the new role applies at once
    assert coaches.find(OWNER_EMAIL).role == "viewer"


def test_owners_removing_each_other_at_once_leave_one_owner(coaches):
    coaches.add("a@example.com", hash_password(PASSWORD), "owner")
    coaches.add("b@example.com", hash_password(PASSWORD), "owner")
    results, start = [], threading.Barrier(2)

    def remove(email):
        start.wait()
        results.append(coaches.remove(email))

    for _ in range(3):
        threads = [threading.Thread(target=remove, args=(email,)) for email in ("a@example.com", "b@example.com")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        owners = [row for row in coaches.all() if row.role == "owner"]
        assert len(owners) == 1
        coaches.add("a@example.com" if owners[0].email == "b@example.com" else "b@example.com",
                    hash_password(PASSWORD), "owner")
    assert results.count("removed") == 3


def test_a_removed_persons_cookie_stops_working_at_once(owner, make_client, coaches, store):
    coaches.add("leaver@example.com", hash_password(PASSWORD), "editor")
    leaver = make_client()
    sign_in(leaver, "leaver@example.com")
    assert leaver.get("/dashboard").status_code == 200
    cookie = leaver.cookies.get("cf_coach")
    assert post_team(owner, "remove", email="leaver@example.com").status_code == 303
    assert leaver.get("/dashboard").status_code == 303
    replay = make_client()
    replay.cookies.set("cf_coach", cookie)
    assert replay.get("/dashboard").headers["location"] == "/dashboard/login"
    assert sign_in(make_client(), "leaver@example.com").status_code == 401
    assert audit_actions(store.engine)[-1] == (OWNER_EMAIL, "team.removed", "leaver@example.com (editor) removed")


def test_the_role_of_a_person_changes_and_is_audited(owner, coaches, make_client, store):
    coaches.add("helper@example.com", hash_password(PASSWORD), "viewer")
    helper = make_client()
    sign_in(helper, "helper@example.com")
    assert helper.get("/dashboard/team").status_code == 403
    assert post_team(owner, "role", email="helper@example.com", role="owner").status_code == 303
    assert coaches.find("helper@example.com").role == "owner"
    assert helper.get("/dashboard/team").status_code == 200  # at once, with the same cookie
    assert audit_actions(store.engine)[-1] == (OWNER_EMAIL, "team.role_changed", "helper@example.com: viewer → owner")
    assert post_team(owner, "role", email="nobody@example.com", role="editor").status_code == 404
    assert post_team(owner, "role", email="helper@example.com", role="root").status_code == 400


def first_owner_form(client, **fields):
    page = client.get("/dashboard/login")
    return client.post("/dashboard/first-owner", data={"csrf_token": csrf_of(page.text), **fields})


def test_a_new_deployment_makes_its_first_owner_from_the_sign_in_page(make_client, coaches, store):
    browser = make_client()
    page = browser.get("/dashboard/login")
    assert "Create the first owner" in page.text and "CANCEL_FLOW_SECRET_KEY" in page.text
    fields = {"email": "Founder@example.com", "password": PASSWORD, "password_again": PASSWORD}
    refused = first_owner_form(browser, secret_key="a guess", **fields)
    assert refused.status_code == 401 and not coaches.any()
    made = first_owner_form(browser, secret_key=SECRET, **fields)
    assert made.status_code == 303 and browser.get("/dashboard/team").status_code == 200
    assert coaches.find("founder@example.com").role == "owner"
    assert audit_actions(store.engine) == [("founder@example.com", "team.first_owner", "founder@example.com made the first owner")]

    late = make_client()
    assert "Coach sign-in" in late.get("/dashboard/login").text
    again = first_owner_form(late, secret_key=SECRET, email="late@example.com", password=PASSWORD, password_again=PASSWORD)
    assert again.status_code == 409 and coaches.find("late@example.com") is None


def test_guessing_the_secret_key_is_throttled_like_sign_in(make_client, coaches):
    browser = make_client(client_address="203.0.113.9")
    statuses = [first_owner_form(browser, secret_key=f"guess {n}", email="x@example.com", password=PASSWORD,
                                 password_again=PASSWORD).status_code for n in range(6)]
    assert statuses == [401] * 5 + [429]
    assert first_owner_form(browser, secret_key=SECRET, email="x@example.com", password=PASSWORD,
                            password_again=PASSWORD).status_code == 429
    assert not coaches.any()


# --- forgotten passwords -------------------------------------------------------------------------------

def ask_reset(client, email: str):
    page = client.get("/dashboard/password-reset")
    return client.post("/dashboard/password-reset", data={"csrf_token": csrf_of(page.text), "email": email})


def reset_link(message) -> str:
    return re.search(r"http://testserver(/dashboard/password-reset/\S+)", message.get_body(("plain",)).get_content()).group(1)


def test_a_reset_link_by_email_sets_a_new_password_once_and_ends_the_old_sessions(make_client, coaches, inbox, store):
    coaches.add(OWNER_EMAIL, hash_password(PASSWORD), "owner")
    laptop = make_client(smtp_url=inbox.url)
    assert sign_in(laptop).status_code == 303
    browser = make_client(smtp_url=inbox.url)
    assert 'href="/dashboard/password-reset"' in browser.get("/dashboard/login").text
    known, unknown = ask_reset(browser, "Owner@Example.com"), ask_reset(browser, "nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace("owner@example.com", "X") == unknown.text.replace("nobody@example.com", "X")
    [mail] = inbox.messages
    assert mail["To"] == OWNER_EMAIL
    path = reset_link(mail)
    page = browser.get(path)
    assert page.status_code == 200 and "Choose a new password" in page.text
    new_password = "a much better passphrase"
    done = browser.post(path, data={"csrf_token": csrf_of(page.text), "password": new_password, "password_again": new_password})
    assert done.status_code == 303 and browser.get("/dashboard").status_code == 200
    assert laptop.get("/dashboard").status_code == 303  # signed in with the old password: ended
    assert browser.get(path).status_code == 410  # once only
    assert sign_in(make_client()).status_code == 401
    assert sign_in(make_client(), password=new_password).status_code == 303
    assert audit_actions(store.engine)[-1][:2] == (OWNER_EMAIL, "team.password_reset")


def test_a_reset_link_works_for_one_hour(make_client, coaches, inbox):
    coaches.add(OWNER_EMAIL, hash_password(PASSWORD), "owner")
    browser = make_client(smtp_url=inbox.url)
    with freeze_time("2026-11-24 10:00:00", real_asyncio=True) as frozen:
        ask_reset(browser, OWNER_EMAIL)
        path = reset_link(inbox.messages[0])
        frozen.tick(timedelta(minutes=59))
        assert browser.get(path).status_code == 200
        frozen.tick(timedelta(minutes=2))
        gone = browser.get(path)
        assert gone.status_code == 410 and "Forgot your password?" in gone.text
    assert sign_in(make_client()).status_code == 303


def test_reset_requests_are_throttled_like_sign_in(make_client, coaches, inbox):
    coaches.add(OWNER_EMAIL, hash_password(PASSWORD), "owner")
    browser = make_client(smtp_url=inbox.url, client_address="203.0.113.5")
    statuses = [ask_reset(browser, OWNER_EMAIL).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    assert len(inbox.messages) == 5
    sprayer = make_client(smtp_url=inbox.url, client_address="203.0.113.6")
    statuses = [ask_reset(sprayer, f"person{n}@example.com").status_code for n in range(21)]
    assert statuses == [200] * 20 + [429]
    assert ask_reset(make_client(smtp_url=inbox.url, client_address="198.51.100.1"), OWNER_EMAIL).status_code == 200


def test_without_smtp_in_production_the_page_says_so_whoever_asks(make_client, coaches):
    coaches.add(OWNER_EMAIL, hash_password(PASSWORD), "owner")
    browser = make_client()
    page = browser.get("/dashboard/password-reset")
    assert "Email is not set up" in page.text and "<form" not in page.text
    token = browser.cookies.get("cf_login_csrf")
    known, unknown = [browser.post("/dashboard/password-reset", data={"csrf_token": token, "email": email})
                      for email in (OWNER_EMAIL, "nobody@example.com")]
    assert known.status_code == unknown.status_code == 503 and known.text == unknown.text
    assert "Email is not set up" in known.text
