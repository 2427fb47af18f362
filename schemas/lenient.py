"""Lenient twins of the msgspec models, for reading events the ledger already holds.

Admission (`envelope.decode_event`) applies every bound and pattern of the models. What is
already stored was admitted under the rules of its day, which may have been looser (v1 had no
upper bound on `qty`, no pattern on `subject`): readers must still read it. A twin has the same
fields, types, enumerations, defaults and closedness as its model, without the value
constraints (`Meta` patterns, lengths, ranges); what it decodes is rebuilt as an instance of
the real model, so readers see the same classes whichever path decoded an event.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

T = TypeVar("T", bound=msgspec.Struct)

_TWINS: dict[type, type] = {}  # model -> twin
_MODELS: dict[type, type] = {}  # twin -> model


def _loosen(t: Any) -> Any:
    """`t` without value constraints, with every Struct replaced by its twin."""
    origin = get_origin(t)
    if origin is Annotated:
        return _loosen(get_args(t)[0])
    if isinstance(t, type) and issubclass(t, msgspec.Struct):
        return _twin(t)
    if origin is list:
        return list[_loosen(get_args(t)[0])]  # type: ignore[misc]
    if origin is Union or origin is types.UnionType:
        args = tuple(_loosen(a) for a in get_args(t))
        return Union[args]  # noqa: UP007 (built at run time from a tuple)
    return t  # str, int, float, bool, None, Literal[...], msgspec.Raw, UnsetType


def _twin(model: type) -> type:
    twin = _TWINS.get(model)
    if twin is not None:
        return twin
    hints = get_type_hints(model, include_extras=True)
    config = model.__struct_config__  # type: ignore[attr-defined]
    fields: list[Any] = []
    rename: dict[str, str] = {}
    for f in msgspec.structs.fields(model):
        t = _loosen(hints[f.name])
        if f.encode_name != f.name:
            rename[f.name] = f.encode_name
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, t, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, t, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, t))
    twin = msgspec.defstruct(f"Stored{model.__name__}", fields, kw_only=True,
                             forbid_unknown_fields=config.forbid_unknown_fields,
                             rename=rename or None)
    _TWINS[model], _MODELS[twin] = twin, model
    return twin


def _restore(obj: Any) -> Any:
    model = _MODELS.get(type(obj))
    if model is not None:
        return model(**{name: _restore(getattr(obj, name)) for name in obj.__struct_fields__})
    if isinstance(obj, list):
        return [_restore(x) for x in obj]
    return obj


def lenient_decoder(model: type[T]) -> Callable[[bytes | msgspec.Raw], T]:
    """A JSON decoder for `model` that checks structure only and returns `model` instances.

    Raises msgspec.ValidationError / DecodeError like a strict decoder when the structure is
    wrong (a missing field, a string where an object belongs, an unknown enumeration value).
    """
    decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_twin(model))

    def decode(data: bytes | msgspec.Raw) -> T:
        restored: T = _restore(decoder.decode(data))
        return restored

    return decode
