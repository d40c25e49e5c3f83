"""TOML in and out: the offers file that seeds the first version, `cancel-flow config import` and
`config export`. The only place that parses TOML; everything else reads validated values."""

import json
import re
import tomllib
from pathlib import Path

from cancel_flow.config.schema import Configuration
from cancel_flow.config.validate import plain, validate
from cancel_flow.errors import InvalidConfig, SettingsError

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def read_toml(text: str, source: str) -> dict:
    """The document's tables (dates as ISO strings); a syntax error names the source and the line."""
    try:
        return plain(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{source}: not valid TOML: {error}") from None


def read_toml_file(path: Path) -> dict:
    if not path.is_file():
        raise SettingsError(f"CANCEL_FLOW_OFFERS: offers file {path} not found (copy offers.toml from the cancel-flow repository)")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as error:
        raise SettingsError(f"{path}: cannot be read: {error}") from None
    return read_toml(text, str(path))


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _is_tables(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _table(path: list[str], table: dict, out: list[str]) -> None:
    nested = []
    for name, value in table.items():
        if (isinstance(value, dict) and value) or _is_tables(value):
            nested.append((name, value))
        else:
            out.append(f"{_key(name)} = {_value(value)}")
    for name, value in nested:
        here = path + [_key(name)]
        if isinstance(value, dict):
            if not all((isinstance(v, dict) and v) or _is_tables(v) for v in value.values()):
                out.extend(["", f"[{'.'.join(here)}]"])  # a table of tables only needs its tables' headers
            _table(here, value, out)
        else:
            for item in value:
                out.extend(["", f"[[{'.'.join(here)}]]"])
                _table(here, item, out)


def to_toml(document: dict) -> str:
    """The document as TOML: scalars first in each table, then its tables and arrays of tables."""
    out: list[str] = []
    _table([], document, out)
    return "\n".join(out).lstrip("\n") + "\n"


def read_configuration_file(path: Path) -> tuple[dict, Configuration]:
    """An offers file's document and its Configuration; a mistake is an InvalidConfig naming the file and field."""
    document = read_toml_file(path)
    try:
        return document, validate(document, path.resolve().parent)
    except InvalidConfig as refused:
        raise refused.from_source(str(path)) from None
