"""Plain YAML documents built straight from libyaml's events: the fast path.

Composing a node graph and constructing from it costs about three times as
much as reading libyaml's event stream directly. Lab files are plain block
YAML (mappings, sequences, untagged scalars), so they are built here; anything
else (aliases, tags, complex keys, several documents, a syntax error) raises
NotPlain and the caller takes PyYAML's full loader, which gives the same data,
or the error with its line.

Scalars are typed by the loader's own implicit resolvers and constructors, so
the result equals what `yaml.load(text, Loader)` returns.
"""
from __future__ import annotations

from typing import Any

import yaml

_STR = "tag:yaml.org,2002:str"
_PLAIN_TAGS = {"tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
               "tag:yaml.org,2002:float", _STR}
_NO_KEY = object()
_MISSING = object()
_CACHE_LIMIT = 50_000
MAX_DEPTH = 64
_Scalar, _MapStart, _SeqStart = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
_MapEnd, _SeqEnd, _StreamEnd = yaml.MappingEndEvent, yaml.SequenceEndEvent, yaml.StreamEndEvent
_DocStart, _DocEnd, _StreamStart = yaml.DocumentStartEvent, yaml.DocumentEndEvent, yaml.StreamStartEvent


class NotPlain(Exception):
    """Not a plain document (or not valid YAML): use the full loader."""


class AliasFound(NotPlain):
    """An alias (`*name`), with the field and line where it is used."""

    def __init__(self, field: str, line: int):
        super().__init__(field, line)
        self.field, self.line = field, line


def parse_plain(text: str, loader_class: type, lines: dict[str, int] | None = None) -> Any:
    """The document's data; fills `lines` ({dotted.field.path: line}) when given."""
    loader = loader_class(text)
    try:
        return _build(loader, _Typer.of(loader_class), lines)
    except (yaml.YAMLError, RecursionError):
        raise NotPlain from None
    finally:
        loader.dispose()


def _field_at(stack: list[list]) -> str:
    """The field path a new node would get at the top of the stack."""
    if not stack:
        return ""
    container, prefix, key, key_path = stack[-1]
    if type(container) is list:
        return f"{prefix}[{len(container)}]"
    return prefix if key is _NO_KEY else key_path


class TooDeep(NotPlain):
    """Nesting deeper than MAX_DEPTH: lab files are shallow; this is a mistake or an attack."""

    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _Typer:
    """Types plain scalars like `loader_class`'s resolver, memoising results (all immutable)."""

    _instances: dict[type, "_Typer"] = {}

    @classmethod
    def of(cls, loader_class: type) -> "_Typer":
        if loader_class not in cls._instances:
            cls._instances[loader_class] = cls(loader_class)
        return cls._instances[loader_class]

    def __init__(self, loader_class: type):
        self.resolvers = loader_class.yaml_implicit_resolvers
        self.constructors = loader_class.yaml_constructors
        self.loader = loader_class("")
        self.cache: dict[str, Any] = {}

    def __call__(self, value: str) -> Any:
        try:
            return self.cache[value]
        except KeyError:
            pass
        typed = self._resolve(value)
        if len(self.cache) >= _CACHE_LIMIT:
            self.cache.clear()
        self.cache[value] = typed
        return typed

    def _resolve(self, value: str) -> Any:
        for tag, regexp in self.resolvers.get(value[:1], ()):
            if regexp.match(value):
                if tag == _STR:
                    return value
                if tag not in _PLAIN_TAGS:
                    raise NotPlain  # merge keys, '=' and the like
                return self.constructors[tag](self.loader, yaml.ScalarNode(tag, value))
        return value


def _build(loader, typer: _Typer, lines: dict[str, int] | None) -> Any:
    get_event, typed = loader.get_event, typer.cache.get
    stack: list[list] = []  # frames: [container, field path, pending key, pending key's field path]
    root: Any = None
    documents = 0
    while True:
        event = get_event()
        kind = type(event)
        if kind is _Scalar:  # an anchor alone is harmless; only its aliases are refused
            if event.tag is not None:
                raise NotPlain
            value = event.value
            if event.implicit[0]:
                value = typed(value, _MISSING)
                if value is _MISSING:
                    value = typer(event.value)
        elif kind is _MapStart or kind is _SeqStart:
            if event.tag is not None:
                raise NotPlain
            value = {} if kind is _MapStart else []
        elif kind is _MapEnd or kind is _SeqEnd:
            stack.pop()
            continue
        elif kind is _StreamEnd:
            return root
        elif kind is _DocStart:
            documents += 1
            if documents > 1:
                raise NotPlain
            continue
        elif kind is _StreamStart or kind is _DocEnd:
            continue
        else:  # an alias: refused (YAML bombs); say where when lines are wanted
            raise NotPlain if lines is None else AliasFound(_field_at(stack), event.start_mark.line + 1)
        if not stack:
            root, name = value, ""
            if lines is not None:
                lines.setdefault(name, event.start_mark.line + 1)
        else:
            frame = stack[-1]
            container = frame[0]
            if type(container) is list:
                name = f"{frame[1]}[{len(container)}]" if lines is not None else None
                container.append(value)
            elif frame[2] is _NO_KEY:
                if type(value) is dict or type(value) is list or value in container:
                    raise NotPlain  # a complex or duplicate key: the full loader words it
                frame[2] = value
                if lines is not None:
                    frame[3] = f"{frame[1]}.{event.value}" if frame[1] else event.value
                    lines[frame[3]] = event.start_mark.line + 1
                continue
            else:
                container[frame[2]] = value
                frame[2] = _NO_KEY
                name = frame[3]
            if lines is not None:
                lines.setdefault(name, event.start_mark.line + 1)
        if type(value) is dict or type(value) is list:
            if len(stack) >= MAX_DEPTH:
                raise TooDeep(event.start_mark.line + 1)
            stack.append([value, name, _NO_KEY, None])
