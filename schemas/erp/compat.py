"""FULL compatibility between two versions of a message's JSON Schema, checked structurally.

FULL = both directions: a reader of the newer version reads every message of the older one
(backward), and a reader of the older version reads every message of the newer one (forward).
FULL_TRANSITIVE = every version against every earlier one, not only the previous.

The rule `problems(older, newer)` implements, for the schemas our generator writes:

1. No field is removed or renamed: every property of an object in the older schema is in the
   newer one (an older reader may need it; a rename is a removal plus an addition).
2. `required` is unchanged: no new required field (older messages lack it), and no required
   field made optional (older readers require it, newer messages may omit it).
3. New fields are optional (rule 2) and only where the older object is open (no
   `additionalProperties: false`): older readers ignore them.
4. A kept field keeps its exact constraints: type, format, pattern, bounds, lengths, `const`,
   closed enums (`enum`, a msgspec `Literal`) and `default`. Widening a constraint or an enum
   lets newer messages carry values older readers refuse; narrowing refuses older messages;
   a changed default changes what an absent field means. Objects inside are compared by these
   same rules (a nested object may gain optional fields), array items likewise, and a union
   (`anyOf`/`oneOf`) must keep the same branches.
5. Annotations do not count: `description`, `title`, `examples`, `$comment`, and `$id` at
   the root (it names the version). `$ref`s are followed into each document's `$defs`, so a
   renamed definition is not a change.

The version itself never makes a reader refuse: `schema` is a pattern that admits every version.
"""

from __future__ import annotations

import json
from typing import Any

Schema = dict[str, Any]

ANNOTATIONS = frozenset({"description", "title", "examples", "example", "$comment"})
#: Keywords handled by the structural comparison rather than compared for equality.
_STRUCTURAL = frozenset({"properties", "required", "additionalProperties", "items", "anyOf",
                         "oneOf", "$ref", "$defs", "$schema", "$id"})


def problems(older: Schema, newer: Schema) -> list[str]:
    """What makes `newer` not FULL compatible with `older` (empty: compatible)."""
    out: list[str] = []
    _compare(older, newer, older, newer, "$", out, set())
    return out


def transitive_problems(versions: dict[int, Schema]) -> list[str]:
    """Every version against every earlier one (FULL_TRANSITIVE), as `vI -> vJ: problem`."""
    out = []
    ordered = sorted(versions)
    for i, old in enumerate(ordered):
        for new in ordered[i + 1:]:
            out += [f"v{old} -> v{new}: {p}" for p in problems(versions[old], versions[new])]
    return out


def _resolve(node: Schema, doc: Schema) -> tuple[Schema, str | None]:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node, None
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"only local `#/$defs/` references are supported, not {ref!r}")
    name = ref.removeprefix("#/$defs/")
    target = doc.get("$defs", {}).get(name)
    if target is None:
        raise ValueError(f"{ref} does not resolve")
    return _resolve(target, doc)[0], name


def _constraints(node: Schema) -> Schema:
    return {k: v for k, v in node.items()
            if k not in ANNOTATIONS and k not in _STRUCTURAL and not k.startswith("x-")}


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _show_opt(node: Schema, key: str) -> str:
    return _show(node[key]) if key in node else "(none)"


def _compare(old: Schema, new: Schema, old_doc: Schema, new_doc: Schema, path: str,
             out: list[str], seen: set[tuple[str, str]]) -> None:
    old, old_ref = _resolve(old, old_doc)
    new, new_ref = _resolve(new, new_doc)
    if old_ref is not None and new_ref is not None:
        if (old_ref, new_ref) in seen:
            return  # a recursive definition already being compared
        seen = seen | {(old_ref, new_ref)}
    if path == "$":  # the topic and key are part of the contract
        for k in sorted({k for k in (*old, *new) if k.startswith("x-")}):
            if old.get(k) != new.get(k):
                out.append(f"{path}: {k} changed from {_show(old.get(k))} to {_show(new.get(k))}")
    a, b = _constraints(old), _constraints(new)
    for k in sorted(a.keys() | b.keys()):
        if (k in a) != (k in b) or a.get(k) != b.get(k):
            what = {"type": "type changed", "enum": "closed enum changed",
                    "const": "constant changed", "default": "default changed"}.get(
                k, f"constraint {k} changed")
            out.append(f"{path}: {what} from {_show_opt(a, k)} to {_show_opt(b, k)}")
    _compare_objects(old, new, old_doc, new_doc, path, out, seen)
    if "items" in old or "items" in new:
        if "items" in old and "items" in new:
            _compare(old["items"], new["items"], old_doc, new_doc, f"{path}[]", out, seen)
        else:
            out.append(f"{path}: array items constraint added or removed")
    for key in ("anyOf", "oneOf"):
        if key in old or key in new:
            _compare_branches(old.get(key), new.get(key), old_doc, new_doc, f"{path}", key,
                              out, seen)


def _compare_objects(old: Schema, new: Schema, old_doc: Schema, new_doc: Schema, path: str,
                     out: list[str], seen: set[tuple[str, str]]) -> None:
    old_props: Schema = old.get("properties", {})
    new_props: Schema = new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            out.append(f"{path}.{name}: field removed (or renamed); fields are never removed")
        else:
            _compare(old_props[name], new_props[name], old_doc, new_doc, f"{path}.{name}",
                     out, seen)
    added = [n for n in new_props if n not in old_props]
    closed = old.get("additionalProperties") is False
    for name in added:
        if closed:
            out.append(f"{path}.{name}: field added to a closed object (older readers refuse "
                       "unknown fields there)")
    old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(new_req - old_req):
        out.append(f"{path}.{name}: required field added (older messages lack it); new "
                   "fields must be optional")
    for name in sorted(old_req - new_req):
        out.append(f"{path}.{name}: required field made optional (older readers require it)")
    if old.get("additionalProperties") != new.get("additionalProperties") and not (
            isinstance(old.get("additionalProperties"), dict)
            and isinstance(new.get("additionalProperties"), dict)):
        out.append(f"{path}: additionalProperties changed from "
                   f"{_show(old.get('additionalProperties'))} to "
                   f"{_show(new.get('additionalProperties'))}")
    elif isinstance(old.get("additionalProperties"), dict):
        _compare(old["additionalProperties"], new["additionalProperties"], old_doc, new_doc,
                 f"{path}.*", out, seen)


def _signature(node: Schema, doc: Schema) -> str:
    """What kind of value a union branch admits, to pair old and new branches."""
    resolved, _ = _resolve(node, doc)
    if "const" in resolved or "enum" in resolved:
        return "enum"
    t = resolved.get("type")
    return _show(t) if t is not None else "any"


def _compare_branches(old: Any, new: Any, old_doc: Schema, new_doc: Schema, path: str,
                      key: str, out: list[str], seen: set[tuple[str, str]]) -> None:
    if not isinstance(old, list) or not isinstance(new, list):
        out.append(f"{path}: {key} added or removed (the set of admitted values changed)")
        return
    olds: dict[str, list[Schema]] = {}
    news: dict[str, list[Schema]] = {}
    for branch in old:
        olds.setdefault(_signature(branch, old_doc), []).append(branch)
    for branch in new:
        news.setdefault(_signature(branch, new_doc), []).append(branch)
    if sorted(olds) != sorted(news) or any(len(olds[s]) != len(news[s]) for s in olds):
        out.append(f"{path}: type changed: the {key} branches were {sorted(olds)}, now "
                   f"{sorted(news)}")
        return
    for sig, branches in olds.items():
        for o, n in zip(branches, news[sig], strict=True):
            _compare(o, n, old_doc, new_doc, f"{path}<{sig}>", out, seen)
