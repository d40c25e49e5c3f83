import os
import subprocess
import sys

import pytest

from cancel_flow.errors import SettingsError
from cancel_flow.settings import DEVELOPMENT_SECRET, load_settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("CANCEL_FLOW_", "STRIPE_", "DATABASE_", "SMTP_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_in_development(env):
    env.setenv("CANCEL_FLOW_ENV", "development")
    settings = load_settings()
    assert settings.secret_key == DEVELOPMENT_SECRET
    assert settings.database_url == "sqlite:///./cancel_flow.db"
    assert settings.base_url == settings.return_url == "http://127.0.0.1:8000"
    assert settings.link_max_age == 86400 and settings.billing_link_max_age == 2592000


def test_production_requires_a_secret_key(env):
    with pytest.raises(SettingsError, match="CANCEL_FLOW_SECRET_KEY"):
        load_settings()


def test_dot_env_file_is_read(env, tmp_path):
    (tmp_path / ".env").write_text("CANCEL_FLOW_SECRET_KEY=from-dot-env-0123456789\nCANCEL_FLOW_LINK_MAX_AGE=600\n")
    settings = load_settings()
    assert settings.secret_key == "from-dot-env-0123456789" and settings.link_max_age == 600


@pytest.mark.parametrize("name, value", [
    ("CANCEL_FLOW_LINK_MAX_AGE", "soon"), ("CANCEL_FLOW_LINK_MAX_AGE", "-5"), ("CANCEL_FLOW_ENV", "staging"),
    ("CANCEL_FLOW_BASE_URL", "example.com"), ("STRIPE_WEBHOOK_SECRET", "secret"),
])
def test_invalid_settings_are_named(env, name, value):
    env.setenv("CANCEL_FLOW_ENV", "development")
    env.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_serve_without_stripe_key_stops_with_one_line(env, tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_FLOW_", "STRIPE_"))}
    environment["CANCEL_FLOW_SECRET_KEY"] = "a-long-enough-secret-key"
    result = subprocess.run([sys.executable, "-m", "cancel_flow", "serve"], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "STRIPE_API_KEY" in result.stderr
