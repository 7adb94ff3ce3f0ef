"""JSON answers that never hold the event loop: a large one is encoded off the loop, in
pieces small enough that the interpreter lock is let go between them.

pydantic encodes a model in one call that keeps the interpreter lock throughout: a
``return_tokens`` answer with 500,000 per-token entries takes about a second that way, and
a worker thread doing it would still stop the event loop (health checks included) for all
of that second. Here a large answer is cut along its lists and objects into pieces of about
``PIECE`` JSON values, each encoded by pydantic in one short call, the pieces joined. The
bytes parse to what ``model_dump_json`` gives (keys of a split object may come in another
order). A field is split only where pydantic would write it as its value's own JSON (no
alias, exclusion or custom serializer of the field; none that replaces its model's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, PlainSerializer, TypeAdapter, WrapSerializer
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

# About how many JSON objects and values one piece holds: a few milliseconds of encoding.
PIECE = 2048
# Lists up to this long are cut by each item's weight, longer ones by a sample's.
_WEIGHED_EACH = 1024
_ANY = TypeAdapter(Any)
_END = object()
V = TypeVar("V")
R = TypeVar("R")


async def json_response(value: BaseModel, headers: Mapping[str, str] | None = None) -> Response:
    """``value`` as an ``application/json`` response, encoded by ``off_loop_if_large``."""
    body = await off_loop_if_large(value, encode)
    return Response(body, media_type="application/json", headers=dict(headers or {}))


async def off_loop_if_large(value: V, convert: Callable[[V], R]) -> R:
    """``convert(value)``: on a worker thread when ``value`` weighs more than ``PIECE``
    (``convert`` should then work in pieces: see ``pieces`` and ``json_data``), at once on
    the loop when it is small (a thread hop would cost more). Deciding looks at no more
    than about ``PIECE`` values."""
    if weight(value) <= PIECE:
        return convert(value)
    return await run_in_threadpool(convert, value)


def encode(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, encoded in pieces of about ``PIECE`` values
    (one call when it is small)."""
    return b"".join(pieces(value))


def weight(value: Any, cap: int = PIECE) -> int:
    """How many JSON values ``value`` holds (itself, and every field, item and entry
    within), counted up to ``cap``: past it the count stops at ``cap + 1``, so weighing
    costs at most about ``cap`` steps however large the value."""
    count = 0
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
            continue
        count += 1
        if count > cap:
            return count
        inner = _inner(item)
        if inner is not None:
            stack.append(iter(inner))
    return count


def _inner(value: Any) -> Iterable[Any] | None:
    if isinstance(value, BaseModel):
        return value.__dict__.values()
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, (list, tuple)):
        return value
    return None


def pieces(value: Any) -> Iterator[bytes]:
    """``value``'s JSON in pieces of about ``PIECE`` values, each encoded in one call."""
    if weight(value) <= PIECE:
        yield _dump(value)
    elif isinstance(value, BaseModel) and (heavy := _heavy_fields(value)):
        yield from _model_pieces(value, heavy)
    elif isinstance(value, (list, tuple)):
        yield from _list_pieces(value)
    elif isinstance(value, dict) and all(isinstance(key, str) for key in value):
        yield from _dict_pieces(value)
    else:
        yield _dump(value)


def json_data(value: Any) -> Any:
    """``value`` as ``model_dump(mode="json")`` gives it (dicts, lists, strings, numbers,
    None), built in pieces of about ``PIECE`` values, cut as ``pieces`` cuts."""
    if weight(value) <= PIECE:
        return _ANY.dump_python(value, mode="json")
    if isinstance(value, BaseModel) and (heavy := _heavy_fields(value)):
        data = value.model_dump(mode="json", exclude=set(heavy))
        data.update({name: json_data(getattr(value, name)) for name in heavy})
        return data
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for run in _runs(value):
            if len(run) == 1:
                items.append(json_data(run[0]))
            else:
                items.extend(_ANY.dump_python(run, mode="json"))
        return items
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: json_data(item) for key, item in value.items()}
    return _ANY.dump_python(value, mode="json")


def _heavy_fields(model: BaseModel) -> list[str]:
    """The fields over ``PIECE`` values that can be encoded apart from their model."""
    cls = type(model)
    decorators = cls.__pydantic_decorators__
    if any(d.info.mode == "plain" for d in decorators.model_serializers.values()):
        return []  # the model's own serializer writes every field
    custom = {name for d in decorators.field_serializers.values() for name in d.info.fields}
    heavy = []
    for name, value in model.__dict__.items():
        info = cls.model_fields.get(name)
        if info is None or info.exclude or info.alias or info.serialization_alias:
            continue
        if name in custom or any(
            isinstance(m, (PlainSerializer, WrapSerializer)) for m in info.metadata
        ):
            continue
        if weight(value) > PIECE:
            heavy.append(name)
    return heavy


def _runs(items: list[Any] | tuple[Any, ...]) -> Iterator[list[Any]]:
    """Consecutive items weighing about ``PIECE`` together; an item heavier than that
    alone. Up to ``_WEIGHED_EACH`` items are weighed one by one (a request's results,
    however uneven); a longer list (a text's tokens, alike) by its heaviest of three
    samples, since weighing each item would cost as much as encoding it."""
    if len(items) > _WEIGHED_EACH:
        samples = (items[0], items[len(items) // 2], items[-1])
        per_run = max(1, PIECE // max(weight(item) for item in samples))
        for start in range(0, len(items), per_run):
            yield list(items[start : start + per_run])
        return
    run: list[Any] = []
    total = 0
    for item in items:
        heft = weight(item)
        if run and total + heft > PIECE:
            yield run
            run, total = [], 0
        run.append(item)
        total += heft
    if run:
        yield run


def _model_pieces(model: BaseModel, heavy: list[str]) -> Iterator[bytes]:
    """The model's light fields through its own serializer (which may leave some out),
    then each heavy one in pieces."""
    light = model.model_dump_json(exclude=set(heavy)).encode()
    yield light[:-1]
    for i, name in enumerate(heavy):
        yield b"," if i or light != b"{}" else b""
        yield _dump(name) + b":"
        yield from pieces(getattr(model, name))
    yield b"}"


def _list_pieces(items: list[Any] | tuple[Any, ...]) -> Iterator[bytes]:
    """Each run of items encoded in one call; an item heavier than a piece, in pieces."""
    yield b"["
    for i, run in enumerate(_runs(items)):
        if i:
            yield b","
        if len(run) == 1:
            yield from pieces(run[0])
        else:
            yield _dump(run)[1:-1]
    yield b"]"


def _dict_pieces(mapping: dict[str, Any]) -> Iterator[bytes]:
    yield b"{"
    for i, (key, item) in enumerate(mapping.items()):
        yield (b"," if i else b"") + _dump(key) + b":"
        yield from pieces(item)
    yield b"}"


def _dump(value: Any) -> bytes:
    return _ANY.dump_json(value)
