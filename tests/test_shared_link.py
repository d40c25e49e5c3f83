"""The one shared link: email in, links out by email (a real SMTP server receives them)."""

import re

import pytest

from tests.helpers import csrf_of



@pytest.fixture
def mailing(make_client, inbox):
    return make_client(smtp_url=inbox.url)


def ask(client, address: str, **kwargs):
    page = client.get("/")
    return client.post("/", data={"csrf_token": csrf_of(page.text), "email": address}, **kwargs)


def test_known_email_gets_working_links_by_mail(mailing, inbox, catalogue):
    sub = catalogue.subscription(catalogue.customer(email="member@example.com"))
    response = ask(mailing, "member@example.com")
    assert response.status_code == 200 and "emailed it a link" in response.text
    assert "/cancel/" not in response.text
    [message] = inbox.messages
    assert message["To"] == "member@example.com" and "Peak Performance Coaching" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    cancel = re.search(r"http://testserver(/cancel/\S+)", text).group(1)
    billing = re.search(r"http://testserver(/billing/\S+)", text).group(1)
    assert cancel in html and billing in html
    assert mailing.get(cancel).status_code == 200 and "Continue to cancel" in mailing.get(cancel).text
    assert mailing.get(billing).status_code == 303
    assert sub.id


def test_unknown_email_sends_nothing_and_the_page_reads_the_same(mailing, inbox, catalogue):
    catalogue.subscription(catalogue.customer(email="member@example.com"))
    known = ask(mailing, "member@example.com").text.replace("member@example.com", "X")
    unknown = ask(mailing, "stranger@example.com").text.replace("stranger@example.com", "X")
    assert len(inbox.messages) == 1
    assert re.sub(r'value="[^"]+"', "", known) == re.sub(r'value="[^"]+"', "", unknown)


def test_at_most_three_messages_per_email_per_hour(mailing, inbox, catalogue):
    catalogue.subscription(catalogue.customer(email="member@example.com"))
    for _ in range(5):
        assert ask(mailing, "member@example.com").status_code == 200
    assert len(inbox.messages) == 3


def test_at_most_twenty_requests_per_address_per_hour(mailing, inbox):
    statuses = [ask(mailing, f"person{i}@example.com").status_code for i in range(21)]
    assert statuses[:20] == [200] * 20 and statuses[20] == 429


def test_production_without_smtp_says_email_is_not_set_up(client):
    page = client.get("/")
    assert "Email is not set up" in page.text and "coach@example.com" in page.text
    token = client.cookies.get("cf_form_csrf")
    assert client.post("/", data={"csrf_token": token, "email": "member@example.com"}).status_code == 503


def test_development_without_smtp_prints_the_message(make_client, catalogue, capsys):
    client = make_client(env="development")
    catalogue.subscription(catalogue.customer(email="member@example.com"))
    ask(client, "member@example.com")
    printed = capsys.readouterr().out
    assert "member@example.com" in printed and "/cancel/" in printed


def test_form_needs_its_token_and_a_real_email(mailing):
    assert mailing.post("/", data={"email": "member@example.com"}).status_code == 400
    page = mailing.get("/")
    response = mailing.post("/", data={"csrf_token": csrf_of(page.text), "email": "nope"})
    assert response.status_code == 400 and 'aria-describedby="email-error"' in response.text
