"""Settings from the environment (and a `.env` file in the working directory)."""

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.config import Config

from cancel_flow.errors import SettingsError

DEVELOPMENT_SECRET = "development-only-secret-key-not-for-production"


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./cancel_flow.db"
    secret_key: str = DEVELOPMENT_SECRET
    env: str = "production"
    base_url: str = "http://127.0.0.1:8000"
    return_url: str = "http://127.0.0.1:8000"
    link_max_age: int = 86400
    billing_link_max_age: int = 2592000
    offers_path: Path = Path("offers.toml")
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_portal_configuration: str | None = None
    # billing links (emails, the account page): a portal configuration without cancellation, so cancelling goes
    # through the flow
    stripe_billing_portal_configuration: str | None = None
    smtp_url: str | None = None
    database_pool_size: int = 5
    database_pool_timeout: int = 30
    stripe_timeout: float = 10.0
    stripe_max_network_retries: int = 2
    stripe_deadline: float = 8.0
    stripe_rate_limit: float = 20.0
    stripe_test_secret_key: str | None = None
    timezone: str = "UTC"
    allow_private_urls: bool = False
    locale: str = "en"  # the coach's locale for money and dates on the dashboard (a CLDR locale)

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @property
    def is_https(self) -> bool:
        return self.base_url.startswith("https://")

    def require_stripe(self) -> str:
        if not self.stripe_api_key:
            raise SettingsError("STRIPE_API_KEY is not set: give it your Stripe secret key (sk_…) or restricted key (rk_…)")
        return self.stripe_api_key


def _positive(config: Config, name: str, default, kind, words: str):
    raw = config(name, default=str(default))
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {words}, not {raw!r}") from None
    if not 0 < value < 1e9:
        raise SettingsError(f"{name} must be greater than zero, not {raw!r}")
    return value


def _positive_int(config: Config, name: str, default: int) -> int:
    return _positive(config, name, default, int, "a whole number of seconds")


def _positive_number(config: Config, name: str, default: float) -> float:
    return _positive(config, name, default, float, "a number")


def _url(config: Config, name: str, default: str | None) -> str | None:
    value = config(name, default=default)
    if value is None or value == "":
        return default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http:// or https:// address, not {value!r}")
    return value.rstrip("/")


def _timezone(config: Config) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = config("CANCEL_FLOW_TIMEZONE", default="UTC") or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"CANCEL_FLOW_TIMEZONE must be an IANA time zone such as Europe/Berlin, not {name!r}") from None
    return name


def _locale(config: Config) -> str:
    from cancel_flow.money import known_locale

    value = (config("CANCEL_FLOW_LOCALE", default="en") or "en").strip()
    locale = known_locale(value)
    if locale is None:
        raise SettingsError(f"CANCEL_FLOW_LOCALE must be a locale such as en, en_GB, de or fr_CA, not {value!r}")
    return locale


def _smtp_url(config: Config) -> str | None:
    value = config("SMTP_URL", default=None) or None
    if value and (urlsplit(value).scheme not in ("smtp", "smtps") or not urlsplit(value).hostname):
        raise SettingsError("SMTP_URL must look like smtp://user:password@host:587 (or smtps://…)")
    return value


def _configuration(config: Config, name: str) -> str | None:
    value = config(name, default=None) or None
    if value and not value.startswith("bpc_"):
        raise SettingsError(f"{name} must be a Stripe portal configuration id (bpc_…), not {value!r}")
    return value


def load_settings(env_file: str | Path = ".env") -> Settings:
    """Read and validate every setting; raise SettingsError naming the first bad one."""
    config = Config(env_file if Path(env_file).is_file() else None)
    env = config("CANCEL_FLOW_ENV", default="production")
    if env not in ("production", "development"):
        raise SettingsError(f"CANCEL_FLOW_ENV must be 'production' or 'development', not {env!r}")
    secret = config("CANCEL_FLOW_SECRET_KEY", default=None)
    if not secret:
        if env != "development":
            raise SettingsError("CANCEL_FLOW_SECRET_KEY is not set: it signs links and cookies (required unless CANCEL_FLOW_ENV=development)")
        secret = DEVELOPMENT_SECRET
    elif len(secret) < 16 and env != "development":
        raise SettingsError("CANCEL_FLOW_SECRET_KEY is too short: use at least 16 random characters")
    base_url = _url(config, "CANCEL_FLOW_BASE_URL", "http://127.0.0.1:8000")
    database_url = config("DATABASE_URL", default="sqlite:///./cancel_flow.db")
    if "://" not in database_url:
        raise SettingsError(f"DATABASE_URL must be an SQLAlchemy URL such as sqlite:///./cancel_flow.db, not {database_url!r}")
    webhook_secret = config("STRIPE_WEBHOOK_SECRET", default=None) or None
    if webhook_secret and not webhook_secret.startswith("whsec_"):
        raise SettingsError("STRIPE_WEBHOOK_SECRET must start with whsec_")
    return Settings(
        database_url=database_url,
        secret_key=secret,
        env=env,
        base_url=base_url,
        return_url=_url(config, "CANCEL_FLOW_RETURN_URL", base_url),
        link_max_age=_positive_int(config, "CANCEL_FLOW_LINK_MAX_AGE", 86400),
        billing_link_max_age=_positive_int(config, "CANCEL_FLOW_BILLING_LINK_MAX_AGE", 2592000),
        offers_path=Path(config("CANCEL_FLOW_OFFERS", default="offers.toml")),
        stripe_api_key=config("STRIPE_API_KEY", default=None) or None,
        stripe_api_base=_url(config, "STRIPE_API_BASE", None),
        stripe_webhook_secret=webhook_secret,
        stripe_portal_configuration=_configuration(config, "STRIPE_PORTAL_CONFIGURATION"),
        stripe_billing_portal_configuration=_configuration(config, "STRIPE_BILLING_PORTAL_CONFIGURATION"),
        smtp_url=_smtp_url(config),
        database_pool_size=_positive_int(config, "DATABASE_POOL_SIZE", 5),
        database_pool_timeout=_positive_int(config, "DATABASE_POOL_TIMEOUT", 30),
        stripe_deadline=_positive_number(config, "STRIPE_DEADLINE", 8),
        stripe_rate_limit=_positive_number(config, "STRIPE_RATE_LIMIT", 20),
        stripe_test_secret_key=config("STRIPE_TEST_SECRET_KEY", default=None) or None,
        timezone=_timezone(config),
        locale=_locale(config),
        allow_private_urls=config("CANCEL_FLOW_ALLOW_PRIVATE_URLS", default="") in ("1", "true", "yes"),
    )
