"""The `cancel-flow` command line."""

import argparse
import asyncio
import sys

from cancel_flow import hooks_cli
from cancel_flow.emails.run import register as register_emails
from cancel_flow.errors import CancelFlowError, SettingsError
from cancel_flow.reasons import REASONS


def _settings():
    from cancel_flow.settings import load_settings

    return load_settings()


def _migrate(args) -> int:
    from cancel_flow.store import make_engine, migrate

    settings = _settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    engine.dispose()
    print("Database is up to date.")
    return 0


def _offers_explain(args) -> int:
    from cancel_flow.explain import explain_offers

    for line in asyncio.run(explain_offers(_settings(), args.customer, args.reason)):
        print(line)
    return 0


def _stripe_check(args) -> int:
    from cancel_flow.stripe_check import run_stripe_check
    from cancel_flow.stripe_connection import settings_in_use

    _, ok = run_stripe_check(settings_in_use(_settings()), on_line=lambda line: print(line, flush=True))
    return 0 if ok else 1


def _sweep(args) -> int:
    from cancel_flow.config.live import open_live
    from cancel_flow.hooks import is_test_mode
    from cancel_flow.outbox.session_events import SessionEvents
    from cancel_flow.store import Store, make_engine, require_migrated
    from cancel_flow.store.api_keys import LinkRequestStore
    from cancel_flow.store.coaches import CoachStore
    from cancel_flow.store.declarations import DeclarationStore
    from cancel_flow.stripe_connection import finish_roll_quietly
    from cancel_flow.web.coach_auth import FAILURE_WINDOW
    from cancel_flow.web.shared_link_routes import WINDOW

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        require_migrated(engine)
        events = SessionEvents(open_live(engine, settings), is_test_mode(settings.stripe_api_key))
        marked = Store(engine, on_event=events).sweep_deflected()
        coaches = CoachStore(engine)
        coaches.prune_attempts(FAILURE_WINDOW)  # old throttle counters, as serve's sweep does
        coaches.prune_tokens()
        LinkRequestStore(engine).prune(WINDOW)
        keep_days = events.live.current().compliance.records_keep_days
        deleted = DeclarationStore(engine).prune(keep_days)  # withdrawals and cancel-button records past their time
        asyncio.run(finish_roll_quietly(settings, engine))  # a rolled signing secret's old endpoint, after 24 hours
    finally:
        engine.dispose()
    print(f"{marked} session(s) marked deflected.")
    if deleted:
        print(f"{deleted} declaration(s) older than {keep_days} days deleted.")
    return 0


def _coach_email(raw: str) -> str | None:
    email = raw.strip().lower()
    if "@" not in email or len(email) > 320:
        print(f"cancel-flow: {raw!r} is not an email address", file=sys.stderr)
        return None
    return email


def _new_password(args) -> str | None:
    """From standard input (--password-stdin) or typed twice at a prompt; None (after saying why) if unusable."""
    import getpass

    from cancel_flow.passwords import MIN_LENGTH

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            print("cancel-flow: the passwords differ", file=sys.stderr)
            return None
    if len(password) < MIN_LENGTH:
        print(f"cancel-flow: the password must be at least {MIN_LENGTH} characters", file=sys.stderr)
        return None
    return password


def _coach(args) -> int:
    from cancel_flow.passwords import hash_password
    from cancel_flow.store import make_engine, migrate
    from cancel_flow.store.audit import COMMAND_LINE, record_audit
    from cancel_flow.store.coaches import CoachStore

    email = _coach_email(args.email)
    if email is None:
        return 1
    password = _new_password(args) if args.coach_command in ("add", "password") else None
    if args.coach_command in ("add", "password") and password is None:
        return 1
    engine = make_engine(_settings().database_url)
    try:
        migrate(engine)
        coaches = CoachStore(engine)
        if args.coach_command == "add":
            if not coaches.add(email, hash_password(password), args.role, on_added=lambda connection: record_audit(
                    connection, "team.added", f"{email} added as {args.role}", actor=COMMAND_LINE)):
                print(f"cancel-flow: a coach with email {email} exists already", file=sys.stderr)
                return 1
            print(f"Coach {email} ({args.role}) can now sign in at /dashboard/login.")
        elif args.coach_command == "password":
            if not coaches.set_password(email, hash_password(password)):
                print(f"cancel-flow: no coach with email {email}", file=sys.stderr)
                return 1
            record_audit(engine, "team.password_set", f"new password for {email}; its sessions ended", actor=COMMAND_LINE)
            print(f"New password set for {email}; every session signed in before has ended.")
        else:
            outcome = coaches.remove(email, on_removed=lambda connection, row: record_audit(
                connection, "team.removed", f"{email} ({row.role}) removed", actor=COMMAND_LINE))
            if outcome == "missing":
                print(f"cancel-flow: no coach with email {email}", file=sys.stderr)
                return 1
            if outcome == "last_owner":
                print(f"cancel-flow: {email} is the last owner and can't be removed: make another coach an owner "
                      "first (on the Team page)", file=sys.stderr)
                return 1
            print(f"Coach {email} removed; their sessions have ended.")
    finally:
        engine.dispose()
    return 0


def _serve(args) -> int:
    from cancel_flow.server import serve

    serve(_settings(), host=args.host, port=args.port, workers=args.workers,
          forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


def _config(args) -> int:
    from pathlib import Path

    from cancel_flow.config.live import open_live
    from cancel_flow.config.toml import read_toml_file, to_toml
    from cancel_flow.errors import InvalidConfig
    from cancel_flow.store import make_engine, migrate
    from cancel_flow.store.config_versions import StaleVersion

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        live = open_live(engine, settings)
        if args.config_command == "export":
            saved = live.document()
            text = f"# cancel-flow configuration, version {saved.version}\n" + to_toml(saved.document)
            if args.file and args.file != "-":
                Path(args.file).write_text(text, encoding="utf-8")
                print(f"Wrote version {saved.version} to {args.file}.", file=sys.stderr)
            else:
                sys.stdout.write(text)
            return 0
        path = Path(args.file)
        document = read_toml_file(path)
        try:
            number = live.save(document, base_version=live.versions.latest_number(), saved_by="command line",
                               origin="import", note=args.note or f"imported from {path.name}")
        except InvalidConfig as refused:
            raise refused.from_source(str(path)) from None
        except StaleVersion:
            print("cancel-flow: another version was saved at the same moment; nothing was saved, run the import again",
                  file=sys.stderr)
            return 1
        print(f"Saved as version {number}: live on every worker within a few seconds, no restart needed.")
        return 0
    finally:
        engine.dispose()


def _api_key(args) -> int:
    import secrets

    from cancel_flow.store import make_engine, migrate
    from cancel_flow.store.api_keys import DEFAULT_SCOPES, ApiKeyStore, check_scopes, scopes_of
    from cancel_flow.store.audit import COMMAND_LINE, record_audit

    scopes = DEFAULT_SCOPES
    if getattr(args, "scope", None):
        try:
            scopes = check_scopes(name for value in args.scope for name in value.split(","))
        except ValueError as unknown:
            print(f"cancel-flow: {unknown}", file=sys.stderr)
            return 2
        if not scopes:
            print("cancel-flow: name at least one scope: links, stats, hooks, config", file=sys.stderr)
            return 2
    engine = make_engine(_settings().database_url)
    migrate(engine)
    keys = ApiKeyStore(engine)
    try:
        if args.api_key_command == "create":
            key = "cfk_" + secrets.token_urlsafe(32)
            if not keys.add(args.name, key, scopes, on_added=lambda connection: record_audit(
                    connection, "api_key.created", f"'{args.name}' with scopes {', '.join(scopes)}", actor=COMMAND_LINE)):
                print(f"cancel-flow: an API key named {args.name!r} exists already", file=sys.stderr)
                return 1
            print(key)
            print(f"API key {args.name!r} created with scopes {', '.join(scopes)}. It is shown only now: store it in "
                  "your app's secrets.", file=sys.stderr)
        elif args.api_key_command == "list":
            for row in keys.all():
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                used = f"last used {row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never used"
                print(f"{row.name}\t{row.prefix}…\t{','.join(scopes_of(row))}\t{state}\t{used}")
        elif not keys.revoke(args.name, on_revoked=lambda connection: record_audit(
                connection, "api_key.revoked", f"'{args.name}'", actor=COMMAND_LINE)):
            print(f"cancel-flow: no active API key named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"API key {args.name!r} revoked.")
    finally:
        engine.dispose()
    return 0


def _link(args) -> int:
    from cancel_flow.minting import export_links, mint_links

    settings = _settings()
    if args.export:
        rows = asyncio.run(export_links(settings, args.export, args.max_age))
        print(f"Wrote {rows} customer(s) to {args.export}")
        return 0
    if not (args.customer or args.email):
        print("cancel-flow: link needs --customer, --email or --export", file=sys.stderr)
        return 2
    result = asyncio.run(mint_links(settings, customer=args.customer, email=args.email, subscription=args.subscription))
    print(f"Cancel link:  {result.cancel_url}")
    print(f"Billing link: {result.billing_url}")
    print(f"Cancel link valid until {result.expires_at.isoformat(timespec='seconds')}")
    return 0


def _stripe_setup(args) -> int:
    from cancel_flow.setup import run_stripe_setup

    for line in asyncio.run(run_stripe_setup(_settings(), recreate_webhook=args.recreate_webhook)):
        print(line)
    return 0


def _demo(args) -> int:
    from cancel_flow.demo import run_demo

    return run_demo(port=args.port, emulator_port=args.emulator_port)


def _stripe_emulator(args) -> int:
    import uvicorn

    from cancel_flow.emulator.app import create_emulator_app

    print(f"Stripe emulator on http://{args.host}:{args.port} (set STRIPE_API_BASE to this address)", flush=True)
    # Idle connections are kept for 120 s (uvicorn's default is 5 s): a client that reuses one in the moment the
    # server closes it gets "Server disconnected" for a request never read, a race a test's pause can land on.
    uvicorn.run(create_emulator_app(), host=args.host, port=args.port, log_level="warning", timeout_keep_alive=120)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cancel-flow", description="Retention flow between a Cancel click and Stripe.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="migrate if needed, then serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                       help="proxies whose X-Forwarded-For/Proto are trusted (comma-separated, or '*')")
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser("demo", help="try everything locally: SQLite and the Stripe emulator with sample customers")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--emulator-port", type=int, default=12111)
    demo.set_defaults(handler=_demo)

    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(handler=_migrate)
    commands.add_parser("sweep", help="mark sessions deflected after 24 h, delete declarations past records_keep_days (serve also runs this)").set_defaults(handler=_sweep)

    link = commands.add_parser("link", help="print a cancel link and a billing link for a customer")
    who = link.add_mutually_exclusive_group(required=True)
    who.add_argument("--export", metavar="CSV", help="write links for every customer with an active subscription")
    who.add_argument("--customer", help="Stripe customer id (cus_…)")
    who.add_argument("--email", help="the customer's email (most recent customer with a live subscription)")
    link.add_argument("--subscription", help="Stripe subscription id (sub_…); needed when the customer has several")
    link.add_argument("--max-age", type=int, help="with --export: seconds the cancel links stay valid (up to a year)")
    link.set_defaults(handler=_link)

    api_key = commands.add_parser("api-key", help="JSON API keys")
    api_key_sub = api_key.add_subparsers(dest="api_key_command", required=True, metavar="ACTION")
    create = api_key_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", metavar="SCOPE",
                        help="what the key may call (repeat, or comma-separate): links, stats, hooks, config; "
                             "default: links, stats and hooks")
    api_key_sub.add_parser("list", help="list keys (names and prefixes only)")
    revoke = api_key_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    api_key.set_defaults(handler=_api_key)

    config = commands.add_parser("config", help="the live configuration (brand, offers, emails, alerts…) as TOML")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    export = config_sub.add_parser("export", help="write the live version as TOML (to FILE, else to the screen)")
    export.add_argument("file", nargs="?", metavar="FILE")
    config_import = config_sub.add_parser("import", help="check a TOML file and save it as a new live version")
    config_import.add_argument("file", metavar="FILE")
    config_import.add_argument("--note", help="what changed, for the history")
    config.set_defaults(handler=_config)

    coach = commands.add_parser("coach", help="dashboard logins")
    coach_sub = coach.add_subparsers(dest="coach_command", required=True, metavar="ACTION")
    coach_add = coach_sub.add_parser("add", help="create a dashboard login")
    coach_add.add_argument("email")
    coach_add.add_argument("--role", choices=("owner", "editor", "viewer"), default="owner",
                           help="owner: everything; editor: settings and what a viewer sees; viewer: read only "
                                "(default: owner)")
    coach_add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    coach_password = coach_sub.add_parser("password", help="set a new password (ends every session of that login)")
    coach_password.add_argument("email")
    coach_password.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    coach_remove = coach_sub.add_parser("remove", help="remove a dashboard login (ends its sessions; never the last owner)")
    coach_remove.add_argument("email")
    coach.set_defaults(handler=_coach)

    stripe_cmd = commands.add_parser("stripe", help="Stripe account set-up")
    stripe_sub = stripe_cmd.add_subparsers(dest="stripe_command", required=True, metavar="ACTION")
    setup = stripe_sub.add_parser("setup", help="create coupons, a portal configuration and the webhook endpoint")
    setup.add_argument("--recreate-webhook", action="store_true",
                       help="replace a webhook endpoint whose API version is not the SDK's (prints a new signing secret)")
    setup.set_defaults(handler=_stripe_setup)
    stripe_sub.add_parser("check", help="check the Stripe account end to end: PASS/WARN/FAIL per line, non-zero on failure").set_defaults(handler=_stripe_check)

    emulator = commands.add_parser("stripe-emulator", help="run the local Stripe emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=12111)
    emulator.set_defaults(handler=_stripe_emulator)
    offers_cmd = commands.add_parser("offers", help="the offers")
    offers_sub = offers_cmd.add_subparsers(dest="offers_command", required=True, metavar="ACTION")
    explain = offers_sub.add_parser("explain", help="which offers a customer would see, and why not the others")
    explain.add_argument("--customer", required=True, help="Stripe customer id (cus_…)")
    explain.add_argument("--reason", choices=sorted(REASONS), help="the reason they would give (default: any)")
    explain.set_defaults(handler=_offers_explain)
    hooks_cli.register(commands)
    register_emails(commands)
    return parser


MIGRATE_FIRST = ("cancel-flow: the database has no cancel-flow tables yet, or an older version of them: "
                 "run `cancel-flow migrate` first")


def _database_problem(error: Exception) -> str:
    """One line for a database error a command met: 'run cancel-flow migrate' when the schema is missing or
    behind, else what kind of error it was (never a traceback, never the statement)."""
    from cancel_flow.settings import load_settings
    from cancel_flow.store import make_engine, schema_is_current

    try:
        engine = make_engine(load_settings().database_url)
        try:
            if not schema_is_current(engine):
                return MIGRATE_FIRST
        finally:
            engine.dispose()
    except Exception:
        pass
    first_line = str(getattr(error, "orig", error)).strip().splitlines()[:1]
    return f"cancel-flow: the database refused the command ({type(error).__name__}: {''.join(first_line)[:200]}); " \
           "check DATABASE_URL and that the database answers"


def main(argv: list[str] | None = None) -> None:
    from sqlalchemy.exc import DBAPIError

    from cancel_flow.store import NotMigrated

    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.handler(args))
    except NotMigrated:
        print(MIGRATE_FIRST, file=sys.stderr)
        sys.exit(1)
    except DBAPIError as error:
        print(_database_problem(error), file=sys.stderr)
        sys.exit(1)
    except SettingsError as error:
        print(f"cancel-flow: {error}", file=sys.stderr)
        sys.exit(2)
    except CancelFlowError as error:
        print(f"cancel-flow: {error.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
