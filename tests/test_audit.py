"""The audit log: each change of the team, keys and endpoints (from the dashboard, the command line or the API)
is one row with who, when, what and from where; the page lists them newest first, the CSV has them all."""

import csv
import io
import secrets

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from cancel_flow.models import AuditEntry
from cancel_flow.passwords import hash_password
from cancel_flow.store.api_keys import ApiKeyStore
from cancel_flow.store.audit import COMMAND_LINE, record_audit, recent_entries
from cancel_flow.store.coaches import CoachStore
from tests.helpers import csrf_of, run_cli
from tests.test_outbox import receivers  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"


def rows(engine) -> list[tuple]:
    table = AuditEntry.__table__
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            sa.select(table.c.actor, table.c.action, table.c.detail, table.c.address).order_by(table.c.id))]


@pytest.fixture
def owner(make_client, store):
    CoachStore(store.engine).add("owner@example.com", hash_password(PASSWORD), "owner")
    browser = make_client(client_address="198.51.100.7", allow_private_urls=True)
    page = browser.get("/dashboard/login")
    browser.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": "owner@example.com", "password": PASSWORD})
    return browser


@pytest.fixture
def cli_env(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")
    monkeypatch.setenv("CANCEL_FLOW_ALLOW_PRIVATE_URLS", "1")


def test_command_line_changes_are_audited(cli_env, monkeypatch, store, capsys):
    assert run_cli(["coach", "add", "a@example.com", "--role", "editor", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 0
    assert run_cli(["coach", "add", "a@example.com", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 1  # no row
    assert run_cli(["coach", "password", "a@example.com", "--password-stdin"], monkeypatch, PASSWORD + "!\n") == 0
    assert run_cli(["coach", "remove", "a@example.com"], monkeypatch) == 0
    assert run_cli(["api-key", "create", "app", "--scope", "links"], monkeypatch) == 0
    assert run_cli(["api-key", "revoke", "app"], monkeypatch) == 0
    assert run_cli(["webhook", "add", "http://127.0.0.1:9/hook/secret-path", "--events", "session.saved"], monkeypatch) == 0
    endpoint = capsys.readouterr().out.split("Endpoint ")[-1].split()[0]
    assert run_cli(["webhook", "remove", endpoint], monkeypatch) == 0
    assert rows(store.engine) == [
        (COMMAND_LINE, "team.added", "a@example.com added as editor", None),
        (COMMAND_LINE, "team.password_set", "new password for a@example.com; its sessions ended", None),
        (COMMAND_LINE, "team.removed", "a@example.com (editor) removed", None),
        (COMMAND_LINE, "api_key.created", "'app' with scopes links", None),
        (COMMAND_LINE, "api_key.revoked", "'app'", None),
        (COMMAND_LINE, "webhook_endpoint.added", f"{endpoint} → 127.0.0.1 (session.saved)", None),
        (COMMAND_LINE, "webhook_endpoint.removed", endpoint, None),
    ]
    assert "secret-path" not in str(rows(store.engine))


def test_rest_hooks_made_by_zapier_are_audited_with_the_key_and_address(make_client, store, receivers):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("zapier", key)
    api = make_client(client_address="203.0.113.40", allow_private_urls=True)
    auth = {"Authorization": f"Bearer {key}"}
    hook = api.post("/api/hooks", headers=auth, json={"target_url": receivers().url + "/catch", "event": "session.canceled"}).json()
    assert api.delete(f"/api/hooks/{hook['id']}", headers=auth).status_code == 204
    assert rows(store.engine) == [
        ("API key 'zapier'", "webhook_endpoint.added", f"{hook['id']} → 127.0.0.1 (session.canceled) as a REST hook", "203.0.113.40"),
        ("API key 'zapier'", "webhook_endpoint.removed", f"{hook['id']} (REST hook unsubscribed)", "203.0.113.40"),
    ]


def test_the_audit_page_and_csv_show_every_change_newest_first(owner, store):
    with freeze_time("2026-11-24 09:00:00"):
        record_audit(store.engine, "settings.saved", "=HYPERLINK(\"x\") brand colour", actor="editor@example.com",
                     address="192.0.2.1")
    page = owner.get("/dashboard/team")
    owner.post("/dashboard/team/invite", data={"csrf_token": csrf_of(page.text), "email": "new@example.com", "role": "viewer"})
    audit = owner.get("/dashboard/audit")
    assert audit.status_code == 200
    text = audit.text
    assert text.index("Invited") < text.index("Settings saved")  # newest first
    assert "new@example.com invited as viewer" in text and "198.51.100.7" in text and "owner@example.com" in text
    assert "24 Nov 2026, 09:00:00" in text and "=HYPERLINK(&#34;x&#34;) brand colour" in text

    exported = owner.get("/dashboard/audit.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    assert exported.text.startswith("\ufeff")
    lines = list(csv.reader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert lines[0] == ["id", "at", "actor", "action", "detail", "address", "time_zone"]
    assert [line[3] for line in lines[1:]] == ["team.invited", "settings.saved"]
    assert lines[2][1] == "2026-11-24T09:00:00+00:00" and lines[2][4].startswith("'=HYPERLINK")


def test_an_audit_row_written_in_a_change_that_fails_is_not_kept(store):
    with pytest.raises(RuntimeError):
        with store.engine.begin() as connection:
            record_audit(connection, "settings.saved", "version 2", actor="x@example.com")
            raise RuntimeError("the change failed")
    assert rows(store.engine) == []
    record_audit(store.engine, "settings.saved", "v" * 5000, actor="x@example.com", address="2001:db8::/64")
    [row] = recent_entries(store.engine)
    assert len(row.detail) == 2000 and row.address == "2001:db8::/64"


def test_the_audit_page_has_older_pages(owner, store):
    for n in range(105):
        record_audit(store.engine, "settings.saved", f"change {n}", actor="x@example.com")
    first = owner.get("/dashboard/audit")
    assert "change 104" in first.text and "change 4<" not in first.text and "Older changes" in first.text
    older = first.text.split('href="/dashboard/audit?before=')[1].split('"')[0]
    second = owner.get(f"/dashboard/audit?before={older}")
    assert "change 4<" in second.text and "change 5<" not in second.text and "Older changes" not in second.text
    assert owner.get("/dashboard/audit?before=abc").status_code == 400
    assert owner.get("/dashboard/audit?before=99999999999999").status_code == 400


def test_a_settings_save_is_audited_with_what_changed_who_and_from_where(make_client, store):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("settings-app", key, ("config",))
    api = make_client(client_address="203.0.113.77")
    auth = {"Authorization": f"Bearer {key}"}
    live = api.get("/api/config", headers=auth).json()
    live["config"]["brand"]["name"] = "Peak Coaching Studio"
    saved = api.put("/api/config", headers=auth, json={"base_version": live["version"], "config": live["config"],
                                                       "note": "new name"})
    assert saved.status_code == 200
    [(actor, action, detail, address)] = rows(store.engine)
    assert (actor, action, address) == ("API key 'settings-app'", "settings.saved", "203.0.113.77")
    assert detail.startswith(f"version {saved.json()['version']} (api): new name") and "Peak Coaching Studio" in detail
    restored = api.post(f"/api/config/versions/{live['version']}/restore", headers=auth)
    assert restored.status_code == 200
    assert rows(store.engine)[-1][1] == "settings.restored"
