"""`cancel-flow webhook add URL [--events …]` / `list` / `remove ID` / `deliver`."""

import sys

from cancel_flow.errors import BadRequest


def _engine():
    from cancel_flow.settings import load_settings
    from cancel_flow.store import make_engine, migrate

    settings = load_settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    return settings, engine


def _add(args) -> int:
    from cancel_flow.outbox.endpoints import add_endpoint
    from cancel_flow.store.audit import COMMAND_LINE, endpoint_words, record_audit

    events = [name.strip() for value in (args.events or []) for name in value.split(",") if name.strip()]
    settings, engine = _engine()
    try:
        endpoint = add_endpoint(engine, args.url, events, source="cli", allow_private=settings.allow_private_urls)
        record_audit(engine, "webhook_endpoint.added", endpoint_words(endpoint.id, args.url, events), actor=COMMAND_LINE)
    except BadRequest as refused:
        print(f"cancel-flow: {refused.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"Endpoint {endpoint.id} added for {', '.join(events) if events else 'every event'}.")
    print(f"Signing secret (Standard Webhooks; shown only now): {endpoint.secret}")
    return 0


def _list(args) -> int:
    from cancel_flow.outbox.endpoints import list_endpoints

    _settings, engine = _engine()
    try:
        rows = list_endpoints(engine)
    finally:
        engine.dispose()
    if not rows:
        print("No webhook endpoints. Add one with: cancel-flow webhook add URL")
    for row in rows:
        state = "enabled" if row.enabled else "switched off"
        if row.enabled and row.failing_since:
            state = f"failing since {row.failing_since:%Y-%m-%d %H:%M}"
        print(f"{row.id}\t{row.url}\t{','.join(row.events) or 'all events'}\t{state}\t{row.source}")
    return 0


def _remove(args) -> int:
    from cancel_flow.outbox.endpoints import remove_endpoint
    from cancel_flow.store.audit import COMMAND_LINE, record_audit

    _settings, engine = _engine()
    try:
        removed = remove_endpoint(engine, args.id)
        if removed:
            record_audit(engine, "webhook_endpoint.removed", args.id, actor=COMMAND_LINE)
    finally:
        engine.dispose()
    if not removed:
        print(f"cancel-flow: no webhook endpoint with id {args.id!r} (see: cancel-flow webhook list)", file=sys.stderr)
        return 1
    print(f"Endpoint {args.id} removed.")
    return 0


def _deliver(args) -> int:
    from cancel_flow.config.live import open_live
    from cancel_flow.emails.sending import GuardedDispatcher as Dispatcher

    settings, engine = _engine()
    dispatcher = Dispatcher.for_config(engine, settings, open_live(engine, settings))
    try:
        attempted = dispatcher.run_due()
    finally:
        dispatcher.close()
        engine.dispose()
    print(f"{attempted} delivery attempt(s) made.")
    return 0


def register(commands) -> None:
    """Add the `webhook` command to the CLI's sub-commands."""
    from cancel_flow.hooks import EVENTS

    webhook = commands.add_parser("webhook", help="outgoing webhook endpoints (Standard Webhooks)")
    actions = webhook.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="send events to a URL; prints its signing secret once")
    add.add_argument("url")
    add.add_argument("--events", nargs="+", metavar="EVENT",
                     help=f"only these events (space- or comma-separated): {', '.join(EVENTS)}; default: all")
    add.set_defaults(handler=_add)
    actions.add_parser("list", help="list endpoints and their state").set_defaults(handler=_list)
    remove = actions.add_parser("remove", help="stop sending to an endpoint")
    remove.add_argument("id")
    remove.set_defaults(handler=_remove)
    actions.add_parser("deliver", help="send the webhooks and alerts that are due now (serve does this continuously)") \
        .set_defaults(handler=_deliver)
