"""Incoming parameters checked against the SDK's own TypedDicts, as Stripe checks them.

A misspelt or retired parameter (the singular `coupon` on subscriptions) is refused with
Stripe's "Received unknown parameter" error; strings are turned into the declared types.
"""

import typing

import typing_extensions
from functools import cache

import stripe
import stripe.params
import stripe.params.billing_portal
import stripe.params.checkout


class ParamError(ValueError):
    def __init__(self, message: str, param: str, code: str = "parameter_invalid"):
        super().__init__(message)
        self.param = param
        self.code = code


@cache
def _hints(typed_dict: type) -> dict:
    try:
        return typing_extensions.get_type_hints(typed_dict, localns=vars(stripe))
    except NameError:
        # A field typed with a name the SDK only imports for type checkers: keep the
        # key known, accept any value for that field alone.
        hints = {}
        for key, annotation in typed_dict.__annotations__.items():
            probe = typing_extensions.TypedDict("Probe", {key: annotation})
            probe.__module__ = typed_dict.__module__
            try:
                hints[key] = typing_extensions.get_type_hints(probe, localns=vars(stripe))[key]
            except NameError:
                hints[key] = typing.Any
        return hints


def params_type(name: str) -> type:
    """`SubscriptionUpdateParams` or `billing_portal.SessionCreateParams`."""
    module = stripe.params
    if "." in name:
        prefix, name = name.split(".")
        module = getattr(stripe.params, prefix)
    return getattr(module, name)


def check_params(values: dict, typed_dict_name: str) -> dict:
    return _check(values, params_type(typed_dict_name), "")


def _join(path: str, key) -> str:
    return f"{path}[{key}]" if path else str(key)


def _check(value, expected, path: str):
    origin = typing.get_origin(expected)
    if typing_extensions.is_typeddict(expected):
        if not isinstance(value, dict):
            raise ParamError(f"Invalid object: {path} must be a hash", path)
        hints = _hints(expected)
        checked = {}
        for key, item in value.items():
            if key not in hints:
                raise ParamError(f"Received unknown parameter: {_join(path, key)}", _join(path, key), "parameter_unknown")
            checked[key] = _check(item, hints[key], _join(path, key))
        # Keys the SDK types as required are required by Stripe too (`url` of a webhook endpoint,
        # `flow_data[type]`, `pause_collection[behavior]`): https://docs.stripe.com/api/errors
        for key in sorted(getattr(expected, "__required_keys__", ())):
            if key not in value:
                raise ParamError(f"Missing required param: {_join(path, key)}.", _join(path, key), "parameter_missing")
        return checked
    if origin is typing.Union:
        options = typing.get_args(expected)
        enum_values = [v for o in options if typing.get_origin(o) in (typing.Literal, typing_extensions.Literal) for v in typing.get_args(o) if v != ""]
        if enum_values and str in options:
            # The SDK widens enums with `str` for forward compatibility; Stripe does not.
            options = tuple(o for o in options if o is not str)
        last_error = hash_error = None
        for option in options:
            try:
                return _check(value, option, path)
            except ParamError as error:
                last_error = error
                if isinstance(value, dict) and typing_extensions.is_typeddict(option) and hash_error is None:
                    hash_error = error
        # A hash that fails its own shape says why, not that it is not the empty string.
        raise hash_error or last_error
    if origin in (typing.Literal, typing_extensions.Literal):
        allowed = typing.get_args(expected)
        if value in allowed:
            return value
        if allowed == ("",):
            raise ParamError(f"Invalid {path}: must be an empty string", path)
        shown = ", ".join(str(item) for item in allowed)
        raise ParamError(f"Invalid {path}: must be one of {shown}", path)
    if origin in (list, typing.List):
        if isinstance(value, dict) and not value:
            value = []
        if not isinstance(value, list):
            raise ParamError(f"Invalid array: {path}", path, "parameter_invalid_array")
        (item_type,) = typing.get_args(expected) or (typing.Any,)
        return [_check(item, item_type, _join(path, index)) for index, item in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise ParamError(f"Invalid object: {path} must be a hash", path)
        return {str(key): item for key, item in value.items()}
    if expected is str:
        if not isinstance(value, str):
            raise ParamError(f"Invalid string: {path}", path, "parameter_invalid_string")
        return value
    if expected is bool:
        if value in ("true", True):
            return True
        if value in ("false", False):
            return False
        raise ParamError(f"Invalid boolean: {value}", path, "parameter_invalid_boolean")
    if expected is int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ParamError(f"Invalid integer: {value}", path, "parameter_invalid_integer") from None
    if expected is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ParamError(f"Invalid decimal: {value}", path, "parameter_invalid_decimal") from None
    return value
