"""Type checks of configuration values against a dataclass field's annotation.

Recipes and task entries are JSON, and `HfArgumentParser.parse_dict` / a dataclass constructor store whatever
they are given: `"learning_rate": "1e-3"` would stay a string and fail deep inside a run, `max_train_samples: true`
would pass as the integer 1 (`bool` is a subclass of `int`). These checks run when the configuration is read, so
a wrong type is one error naming the field, before any data or model is loaded.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any


_NONE = type(None)


def value_matches(value: Any, annotation: Any) -> bool:
    """Whether `value` (as read from JSON) fits `annotation` (a resolved type hint).

    `bool` never counts as `int` or `float`; `int` counts as `float`; an `Enum` also accepts one of its
    values; annotations this module does not know (classes of other libraries) accept their instances.
    """
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(value_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(value is arg or (type(value) is type(arg) and value == arg) for arg in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return isinstance(value, (list, tuple)) and (not args or all(value_matches(v, args[0]) for v in value))
    if origin is dict:
        args = typing.get_args(annotation)
        return isinstance(value, dict) and (not args or all(value_matches(v, args[1]) for v in value.values()))
    if annotation is _NONE:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, annotation) or value in {member.value for member in annotation}
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation form we do not check (e.g. a TypeVar): leave it to the consumer


def describe_type(annotation: Any) -> str:
    """The expected type in words, for error messages ("a number", "a list of strings or null")."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        words = [describe_type(arg) for arg in args if arg is not _NONE]
        if any(arg is _NONE for arg in args):
            words.append("null")
        return " or ".join(dict.fromkeys(words))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin in (list, tuple):
        args = typing.get_args(annotation)
        return "a list" + (f" of {_plural(describe_type(args[0]))}" if args and args[0] is not Any else "")
    if origin is dict or annotation is dict:
        return "a JSON object"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in annotation)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
            _NONE: "null"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _plural(words: str) -> str:
    plurals = {"a string": "strings", "an integer": "integers", "a number": "numbers", "a JSON object": "JSON objects",
               "true or false": "booleans"}
    return plurals.get(words, words)


def type_error_message(where: str, field: str, value: Any, annotation: Any) -> str:
    """One message naming the field, the type it needs, the value it got and the fix."""
    expected = describe_type(annotation)
    shown = json.dumps(value, default=repr)  # as the recipe writes it: true, "1e-3"
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    message = f"{where}: `{field}` must be {expected}, got {shown} ({_json_kind(value)})."
    if isinstance(value, str) and value_matches(_json_scalar(value), annotation):
        return f"{message} Fix: write it without quotes, e.g. \"{field}\": {value.strip()}."
    return f"{message} Fix: give `{field}` {expected}."


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a JSON object"
    return "null" if value is None else type(value).__name__


def _json_scalar(text: str) -> Any:
    """What a quoted scalar would be without its quotes ("1e-3" -> 0.001, "true" -> True), else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (bool, int, float)) else text

