"""Stripe's form encoding (`items[0][price]=…`, `expand[]=…`) to nested dicts and lists."""

import re

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_APPEND = object()


class FormError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def decode_form(pairs: list[tuple[str, str]]) -> dict:
    root: dict = {}
    for raw_key, value in pairs:
        match = _KEY.match(raw_key)
        if not match:
            raise FormError(f"Invalid parameter name: {raw_key}", raw_key)
        path = [match.group(1)] + [part or _APPEND for part in re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if part is _APPEND:
                part = f"#{len(node)}"
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def _listify(node):
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value) for key, value in node.items()}
    if converted and all(key.isdigit() or key.startswith("#") for key in converted):
        ordered = sorted(converted.items(), key=lambda item: int(item[0].lstrip("#")))
        return [value for _, value in ordered]
    return converted
