import pytest

from cancel_flow.cli import main
from tests.conftest import SECRET, TEST_KEY


@pytest.fixture
def cli_env(monkeypatch, emulator_url, database_url, tmp_path):
    monkeypatch.setenv("CANCEL_FLOW_SECRET_KEY", SECRET)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "production")
    monkeypatch.setenv("STRIPE_API_KEY", TEST_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", emulator_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CANCEL_FLOW_BASE_URL", "https://cancel.example.com")


def run(args) -> int:
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code


def test_link_prints_cancel_and_billing_links_for_the_single_subscription(cli_env, catalogue, signer, capsys):
    sub = catalogue.subscription()
    assert run(["link", "--customer", sub.customer]) == 0
    out = capsys.readouterr().out
    cancel_url = next(line.split()[-1] for line in out.splitlines() if line.startswith("Cancel link:"))
    billing_url = next(line.split()[-1] for line in out.splitlines() if line.startswith("Billing link:"))
    assert cancel_url.startswith("https://cancel.example.com/cancel/")
    assert billing_url.startswith("https://cancel.example.com/billing/")
    read = signer.read_cancel(cancel_url.rsplit("/", 1)[1])
    assert (read.customer, read.subscription) == (sub.customer, sub.id)


def test_link_with_several_subscriptions_lists_them(cli_env, catalogue, capsys):
    customer = catalogue.customer()
    first, second = catalogue.subscription(customer), catalogue.subscription(customer)
    assert run(["link", "--customer", customer.id]) == 1
    err = capsys.readouterr().err
    assert first.id in err and second.id in err and "--subscription" in err
    assert run(["link", "--customer", customer.id, "--subscription", second.id]) == 0


def test_link_by_email_and_unknown_customer(cli_env, catalogue, capsys):
    catalogue.subscription(catalogue.customer(email="findme@example.com"))
    assert run(["link", "--email", "findme@example.com"]) == 0
    assert "Cancel link:" in capsys.readouterr().out
    assert run(["link", "--email", "nobody@example.com"]) == 1
    assert run(["link", "--customer", "cus_missing"]) == 1
    assert "cus_missing" in capsys.readouterr().err


def test_stripe_setup_is_idempotent_and_stores_what_the_service_needs(cli_env, stripe_client, capsys, database_url):
    from dataclasses import replace

    from cancel_flow.settings import load_settings
    from cancel_flow.store import make_engine
    from cancel_flow.stripe_connection import read_connection

    assert run(["stripe", "setup"]) == 0
    first = capsys.readouterr().out
    assert "whsec_" not in first  # the secret is stored, never printed
    assert "Stored in the database, encrypted" in first and "no restart" in first
    lines = first.splitlines()
    cancel = next(line for line in lines if line.startswith("STRIPE_PORTAL_CONFIGURATION=bpc_")).split("=")[1]
    billing = next(line for line in lines if line.startswith("STRIPE_BILLING_PORTAL_CONFIGURATION=bpc_")).split("=")[1]
    assert cancel != billing
    engine = make_engine(database_url)
    stored = read_connection(engine, replace(load_settings(), stripe_webhook_secret=None))
    assert stored.webhook_secret_source == "database" and stored.webhook_secrets[0].startswith("whsec_")
    assert (stored.portal_configuration, stored.billing_portal_configuration) == (cancel, billing)
    assert stored.billing_portal_configuration_source == "database"
    # an endpoint made by an earlier version lacks an event the service needs now: the next run adds it
    endpoint = stripe_client.v1.webhook_endpoints.list().data[0]
    stripe_client.v1.webhook_endpoints.update(endpoint.id, params={"enabled_events": ["invoice.paid"]})
    assert run(["stripe", "setup"]) == 0
    second = capsys.readouterr().out
    assert "whsec_" not in second and "the stored secret stays in use" in second
    assert f"STRIPE_PORTAL_CONFIGURATION={cancel}" in second and f"STRIPE_BILLING_PORTAL_CONFIGURATION={billing}" in second
    assert read_connection(engine, replace(load_settings(), stripe_webhook_secret=None)) == stored
    engine.dispose()
    from cancel_flow.stripe_gateway import StripeSetup
    assert set(stripe_client.v1.webhook_endpoints.retrieve(endpoint.id).enabled_events) == set(StripeSetup.WEBHOOK_EVENTS)
    assert sorted(c.id for c in stripe_client.v1.coupons.list().data) == [  # each for the periods its offer serves
        "cancel-flow_half-off-3-payments_50pct_3m", "cancel-flow_half-off-3-payments_50pct_9m", "cancel-flow_yearly-25-off_25pct_12m"]
    assert len(stripe_client.v1.webhook_endpoints.list().data) == 1
    configs = {c.id: c for c in stripe_client.v1.billing_portal.configurations.list().data}
    assert set(configs) == {cancel, billing}
    assert configs[cancel].features.subscription_cancel.enabled and configs[cancel].features.subscription_cancel.mode == "at_period_end"
    assert not configs[billing].features.subscription_cancel.enabled and configs[billing].features.payment_method_update.enabled
    endpoint = stripe_client.v1.webhook_endpoints.list().data[0]
    assert endpoint.url == "https://cancel.example.com/webhooks/stripe"


def test_api_key_create_list_revoke(cli_env, capsys, client):
    assert run(["api-key", "create", "zapier"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("cfk_")
    assert client.get("/api/stats", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert run(["api-key", "create", "zapier"]) == 1
    capsys.readouterr()
    assert run(["api-key", "list"]) == 0
    listed = capsys.readouterr().out
    assert "zapier" in listed and key not in listed and "active" in listed
    assert run(["api-key", "revoke", "zapier"]) == 0
    assert client.get("/api/stats", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert run(["api-key", "revoke", "zapier"]) == 1


def test_link_export_writes_one_row_per_customer_with_working_links(cli_env, catalogue, stripe_client, tmp_path, client):
    import csv

    keeper = catalogue.customer(email="keeper@example.com", name="=Keeper")
    catalogue.subscription(keeper)
    catalogue.subscription(keeper)
    leaver = catalogue.customer(email="leaver@example.com")
    stripe_client.v1.subscriptions.cancel(catalogue.subscription(leaver).id)
    target = tmp_path / "links.csv"
    assert run(["link", "--export", str(target), "--max-age", str(30 * 86400)]) == 0
    rows = list(csv.DictReader(target.open()))
    assert [row["email"] for row in rows] == ["keeper@example.com"] and rows[0]["name"] == "'=Keeper"
    cancel_path = rows[0]["cancel_link"].removeprefix("https://cancel.example.com")
    assert client.get(cancel_path).status_code == 200
    from datetime import datetime, timedelta, timezone
    expires = datetime.fromisoformat(rows[0]["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(timezone.utc) <= timedelta(days=30)


@pytest.mark.parametrize("command", [["sweep"], ["offers", "explain", "--customer", "CUSTOMER"],
                                     ["offers", "explain", "--customer", "cus_unknown", "--reason", "unused"]])
def test_commands_on_a_database_not_yet_migrated_say_to_migrate(cli_env, monkeypatch, tmp_path, catalogue, capsys, command):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    customer = catalogue.subscription().customer
    assert run([customer if word == "CUSTOMER" else word for word in command]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == ("cancel-flow: the database has no cancel-flow tables yet, or an older version of them: "
                           "run `cancel-flow migrate` first")
    assert "Traceback" not in out + err and "SELECT" not in err
    assert run(["migrate"]) == 0 and run(command[:1] if command == ["sweep"] else
                                         [customer if word == "CUSTOMER" else word for word in command]) == 0


def test_a_database_an_upgrade_behind_says_to_migrate(cli_env, monkeypatch, tmp_path, capsys):
    from alembic import command as alembic

    from cancel_flow.store import alembic_config, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    alembic.upgrade(alembic_config(engine), "0009")  # as an earlier version of cancel-flow left it
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", url)
    assert run(["sweep"]) == 1
    assert "run `cancel-flow migrate` first" in capsys.readouterr().err
