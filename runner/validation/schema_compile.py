"""A JSON Schema compiled to plain Python closures: a fast "is it valid?" gate.

`lab validate` checks thousands of small documents; jsonschema's general
machinery costs ~0.5 ms each. Compiling the subset of draft 2020-12 that our
schemas use into closures makes the common case (a valid file) ~20x cheaper.

The gate gives jsonschema's verdict (it must be exact, not merely strict,
because `not`, `oneOf` and `if` invert sub-results). Callers trust `True` and
ask jsonschema for the messages on `False`. A schema using a keyword not
handled here raises `Unsupported`, and callers fall back to jsonschema for
every document of that kind. A test compares the two verdicts on thousands of
mutated documents.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

from ..state.params import is_number

Check = Callable[[Any], bool]

ANNOTATIONS = {"$schema", "$id", "$comment", "$defs", "definitions", "title", "description", "default",
               "examples", "deprecated", "readOnly", "writeOnly", "then", "else"}
OBJECT_KEYWORDS = {"properties", "required", "additionalProperties", "propertyNames", "maxProperties",
                   "minProperties", "dependentRequired"}


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not implement."""


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False



_TYPES: dict[str, Check] = {
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: (isinstance(x, int) and not isinstance(x, bool)) or (
        isinstance(x, float) and x.is_integer()),
    "number": is_number,
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
}


def _same(a: Any, b: Any) -> bool:
    """JSON equality of a value with a scalar from the schema (True is not 1)."""
    if isinstance(a, (dict, list)):
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]

    def run(x: Any) -> bool:
        for check in checks:
            if not check(x):
                return False
        return True
    return run


class Compiler:
    def __init__(self, root: dict, formats: dict[str, Check] | None = None):
        self.root = root
        self.formats = formats or {}
        self.refs: dict[str, Check] = {}

    def compile(self, schema: Any) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise Unsupported(f"schema must be an object or a boolean, got {schema!r}")
        unknown = set(schema) - ANNOTATIONS - OBJECT_KEYWORDS - set(self._keywords())
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks = [self._keywords()[k](schema[k], schema) for k in self._keywords() if k in schema]
        if OBJECT_KEYWORDS & set(schema):
            checks.append(self._object(schema))
        return _all([c for c in checks if c is not _always])

    def _keywords(self) -> dict[str, Callable[[Any, dict], Check]]:
        return {"type": self._type, "enum": self._enum, "const": self._const, "pattern": self._pattern,
                "minLength": self._min_length, "maxLength": self._max_length, "minimum": self._minimum,
                "maximum": self._maximum, "exclusiveMinimum": self._exclusive_minimum,
                "exclusiveMaximum": self._exclusive_maximum, "items": self._items, "minItems": self._min_items,
                "maxItems": self._max_items, "allOf": self._all_of, "anyOf": self._any_of,
                "oneOf": self._one_of, "not": self._not, "if": self._if, "$ref": self._ref,
                "format": self._format, "dependentRequired": self._dependent_required}

    # -- scalars ------------------------------------------------------------
    def _type(self, value, _schema) -> Check:
        names = [value] if isinstance(value, str) else list(value)
        if any(n not in _TYPES for n in names):
            raise Unsupported(f"type {value!r}")
        tests = [_TYPES[n] for n in names]
        if len(tests) == 1:
            return tests[0]
        return lambda x: any(t(x) for t in tests)

    def _enum(self, values, _schema) -> Check:
        if any(isinstance(v, (dict, list)) for v in values):
            raise Unsupported("enum of objects or arrays")
        if all(isinstance(v, str) for v in values):
            allowed = frozenset(values)
            return lambda x: isinstance(x, str) and x in allowed
        return lambda x: any(_same(x, v) for v in values)

    def _const(self, value, _schema) -> Check:
        if isinstance(value, (dict, list)):
            raise Unsupported("const object or array")
        return lambda x: _same(x, value)

    def _pattern(self, pattern, _schema) -> Check:
        search = pattern_search(pattern)
        return lambda x: not isinstance(x, str) or search(x) is not None

    def _min_length(self, n, _schema) -> Check:
        return lambda x: not isinstance(x, str) or len(x) >= n

    def _max_length(self, n, _schema) -> Check:
        return lambda x: not isinstance(x, str) or len(x) <= n

    def _minimum(self, n, _schema) -> Check:
        return lambda x: not is_number(x) or x >= n

    def _maximum(self, n, _schema) -> Check:
        return lambda x: not is_number(x) or x <= n

    def _exclusive_minimum(self, n, _schema) -> Check:
        return lambda x: not is_number(x) or x > n

    def _exclusive_maximum(self, n, _schema) -> Check:
        return lambda x: not is_number(x) or x < n

    def _format(self, name, _schema) -> Check:
        # jsonschema ignores formats its checker does not know; callers give it the same ones
        return self.formats.get(name, _always)

    # -- arrays -------------------------------------------------------------
    def _items(self, sub, _schema) -> Check:
        if not isinstance(sub, (dict, bool)):
            raise Unsupported("items must be a schema (draft 2020-12)")
        item = self.compile(sub)
        if item is _always:
            return _always
        return lambda x: not isinstance(x, list) or all(item(v) for v in x)

    def _min_items(self, n, _schema) -> Check:
        return lambda x: not isinstance(x, list) or len(x) >= n

    def _max_items(self, n, _schema) -> Check:
        return lambda x: not isinstance(x, list) or len(x) <= n

    # -- objects ------------------------------------------------------------
    def _object(self, schema: dict) -> Check:
        if "patternProperties" in schema:
            raise Unsupported("patternProperties")
        props = {name: self.compile(sub) for name, sub in schema.get("properties", {}).items()}
        required = tuple(schema.get("required", ()))
        extra_schema = schema.get("additionalProperties", True)
        extra = self.compile(extra_schema)
        names = self.compile(schema["propertyNames"]) if "propertyNames" in schema else _always
        max_props = schema.get("maxProperties")
        min_props = schema.get("minProperties", 0)
        dependent = schema.get("dependentRequired", {})

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            if (max_props is not None and len(x) > max_props) or len(x) < min_props:
                return False
            for key in required:
                if key not in x:
                    return False
            for key, needs in dependent.items():
                if key in x and any(n not in x for n in needs):
                    return False
            for key, value in x.items():
                test = props.get(key)
                if test is None:
                    test = extra
                if test is not _always and not test(value):
                    return False
            return names is _always or all(names(key) for key in x)
        return check

    def _dependent_required(self, needs: dict, _schema) -> Check:
        pairs = [(key, tuple(others)) for key, others in needs.items()]
        return lambda x: not isinstance(x, dict) or all(o in x for key, others in pairs if key in x for o in others)

    # -- combinators --------------------------------------------------------
    def _all_of(self, subs, _schema) -> Check:
        return _all([self.compile(s) for s in subs])

    def _any_of(self, subs, _schema) -> Check:
        tests = [self.compile(s) for s in subs]
        return lambda x: any(t(x) for t in tests)

    def _one_of(self, subs, _schema) -> Check:
        tests = [self.compile(s) for s in subs]
        return lambda x: sum(1 for t in tests if t(x)) == 1

    def _not(self, sub, _schema) -> Check:
        test = self.compile(sub)
        return lambda x: not test(x)

    def _if(self, sub, schema) -> Check:
        condition = self.compile(sub)
        then = self.compile(schema.get("then", True))
        otherwise = self.compile(schema.get("else", True))
        return lambda x: then(x) if condition(x) else otherwise(x)

    def _ref(self, ref, _schema) -> Check:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise Unsupported(f"$ref {ref!r} (only local references)")
        if ref not in self.refs:
            self.refs[ref] = _never  # placeholder while compiling a recursive reference
            target = self.root
            for part in filter(None, ref[1:].split("/")):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            compiled = self.compile(target)
            self.refs[ref] = compiled
        return lambda x: self.refs[ref](x)


@lru_cache(maxsize=None)
def pattern_search(pattern: str) -> Callable[[str], Any]:
    """A schema `pattern` as a Python search. In JSON Schema's regex dialect (ECMA-262) `$` ends
    the string; Python's `$` also matches before a final newline, so "h-1\\n" would pass
    `^...$`. Every `$` anchor (not escaped, not in a class) becomes `\\Z`."""
    out, escaped, in_class = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            char = r"\Z"
        out.append(char)
    return re.compile("".join(out)).search


def compile_schema(schema: dict, formats: dict[str, Check] | None = None) -> Check:
    """data -> bool, the verdict of jsonschema given a format checker with these `formats`
    ({name: value -> bool}; each must accept values of types the format does not apply to)."""
    return Compiler(schema, formats).compile(schema)
