"""The `cancel-flow` command line."""

import argparse
import sys

from cancel_flow.errors import SettingsError


def _stripe_emulator(args) -> int:
    import uvicorn

    from cancel_flow.emulator.app import create_emulator_app

    print(f"Stripe emulator on http://{args.host}:{args.port} (set STRIPE_API_BASE to this address)", flush=True)
    uvicorn.run(create_emulator_app(), host=args.host, port=args.port, log_level="warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cancel-flow", description="Retention flow between a Cancel click and Stripe.")
    commands = parser.add_subparsers(dest="command", required=True)
    emulator = commands.add_parser("stripe-emulator", help="run the local Stripe emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=12111)
    emulator.set_defaults(handler=_stripe_emulator)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.handler(args))
    except SettingsError as error:
        print(f"cancel-flow: {error}", file=sys.stderr)
        sys.exit(2)
