import io
import json
import re
from contextlib import contextmanager

import pytest

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

# offers.toml pieces: the half-price discount and the pause that most offers files in the tests hold
HALF_PRICE_OFFER = """[[offer]]
id = "half"
kind = "discount"
percent_off = 50
payments = 3
title = "Stay for half price"
"""
PAUSE_OFFER = """[[offer]]
id = "pause"
kind = "pause"
max_payments = 2
title = "Take a break"
"""


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no form"
    return match.group(1)


def arm_tables(*arms: tuple[str, list[str], float]) -> str:
    """offers.toml's [[experiment.arms]] tables, one per (name, offer ids, weight)."""
    return "".join(f'[[experiment.arms]]\nname = "{name}"\noffers = {json.dumps(list(offers))}\nweight = {weight}\n'
                   for name, offers, weight in arms)


def run_cli(args, monkeypatch, stdin_text=None):
    """`cancel-flow ARGS` in this process; its exit code."""
    from cancel_flow.cli import main

    if stdin_text is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin_text))
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code


@contextmanager
def stopped_afterwards(make, stop=lambda made: made.stop()):
    """`make`, remembering what it makes; when the block ends, `stop` runs on each, in the order they were made."""
    made = []

    def making(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    try:
        yield making
    finally:
        for each in made:
            stop(each)


def load_config(path):
    """The Configuration an offers file holds (the one validator, as at first start)."""
    from cancel_flow.config.toml import read_configuration_file

    return read_configuration_file(path)[1]
