"""JSON answers that never hold the event loop: a large one is encoded off the loop, in
pieces small enough that the interpreter lock is let go between them.

pydantic encodes a model in one call that keeps the interpreter lock throughout: a
``return_tokens`` answer with 500,000 per-token entries takes about a second that way, and
a worker thread doing it would still stop the event loop (health checks included) for all
of that second. Here a large answer is cut along its long lists, each piece encoded by
pydantic in one short call, the pieces joined. The bytes parse to what ``model_dump_json``
gives (keys of a split object may come in another order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

# About how many JSON objects and values one piece holds: a few milliseconds of encoding.
PIECE = 2048
# Lists and mappings up to this long are weighed item by item; longer ones by a sample.
_WEIGHED_WHOLE = 16
_ANY = TypeAdapter(Any)
V = TypeVar("V")
R = TypeVar("R")


async def json_response(value: BaseModel, headers: Mapping[str, str] | None = None) -> Response:
    """``value`` as an ``application/json`` response, encoded by ``off_loop_if_large``."""
    body = await off_loop_if_large(value, encode)
    return Response(body, media_type="application/json", headers=dict(headers or {}))


async def off_loop_if_large(value: V, convert: Callable[[V], R]) -> R:
    """``convert(value)``: on a worker thread when ``value`` weighs more than ``PIECE``
    (``convert`` should then work in pieces: see ``pieces`` and ``json_data``), at once on
    the loop when it is small (a thread hop would cost more)."""
    if weight(value) <= PIECE:
        return convert(value)
    return await run_in_threadpool(convert, value)


def encode(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, encoded in pieces of about ``PIECE`` values
    (one call when it is small)."""
    return b"".join(pieces(value))


def weight(value: Any) -> int:
    """About how many JSON values ``value`` encodes to: exact for short lists, estimated
    from three samples (first, middle, last) for long ones."""
    if isinstance(value, BaseModel):
        return 1 + sum(weight(v) for v in value.__dict__.values())
    if isinstance(value, dict):
        return 1 + _items_weight(list(value.values()))
    if isinstance(value, (list, tuple)):
        return 1 + _items_weight(value)
    return 1


def _items_weight(items: list[Any] | tuple[Any, ...]) -> int:
    if len(items) <= _WEIGHED_WHOLE:
        return sum(weight(item) for item in items)
    return len(items) * _item_weight(items)


def _item_weight(items: list[Any] | tuple[Any, ...]) -> int:
    """The heaviest of three sampled items: a long list's first item is often the light
    one (a text's first token has no alternatives)."""
    samples = (items[0], items[len(items) // 2], items[-1])
    return max(weight(item) for item in samples)


def pieces(value: Any) -> Iterator[bytes]:
    """``value``'s JSON in pieces of about ``PIECE`` values, each encoded in one call."""
    if weight(value) <= PIECE:
        yield _dump(value)
    elif isinstance(value, BaseModel):
        yield from _model_pieces(value)
    elif isinstance(value, (list, tuple)):
        yield from _list_pieces(value)
    elif isinstance(value, dict):
        yield from _dict_pieces(value)
    else:
        yield _dump(value)


def json_data(value: Any) -> Any:
    """``value`` as ``model_dump(mode="json")`` gives it (dicts, lists, strings, numbers,
    None), built in pieces of about ``PIECE`` values, cut as ``pieces`` cuts."""
    if weight(value) <= PIECE:
        return _ANY.dump_python(value, mode="json")
    if isinstance(value, BaseModel):
        heavy = _heavy_fields(value)
        data = value.model_dump(mode="json", exclude=set(heavy))
        data.update({name: json_data(getattr(value, name)) for name in heavy})
        return data
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for run in _runs(value):
            if len(run) == 1:
                items.append(json_data(run[0]))
            else:
                items.extend(_ANY.dump_python(list(run), mode="json"))
        return items
    if isinstance(value, dict):
        return {str(key): json_data(item) for key, item in value.items()}
    return _ANY.dump_python(value, mode="json")


def _heavy_fields(model: BaseModel) -> list[str]:
    return [name for name, v in model.__dict__.items() if weight(v) > PIECE]


def _runs(items: list[Any] | tuple[Any, ...]) -> Iterator[list[Any] | tuple[Any, ...]]:
    """Consecutive items that weigh about ``PIECE`` together (one item at a time in a
    short list, whose items may differ a lot)."""
    per_run = 1 if len(items) <= _WEIGHED_WHOLE else max(1, PIECE // _item_weight(items))
    for start in range(0, len(items), per_run):
        yield items[start : start + per_run]


def _model_pieces(model: BaseModel) -> Iterator[bytes]:
    """The model's light fields through its own serializer (which may leave some out),
    then each heavy one in pieces."""
    heavy = _heavy_fields(model)
    light = model.model_dump_json(exclude=set(heavy)).encode()
    yield light[:-1]
    for i, name in enumerate(heavy):
        yield b"," if i or light != b"{}" else b""
        yield _dump(name) + b":"
        yield from pieces(getattr(model, name))
    yield b"}"


def _list_pieces(items: list[Any] | tuple[Any, ...]) -> Iterator[bytes]:
    """Runs of items that weigh about ``PIECE`` together, each encoded in one call; an
    item heavier than that on its own, in pieces."""
    yield b"["
    for i, run in enumerate(_runs(items)):
        if i:
            yield b","
        if len(run) == 1:
            yield from pieces(run[0])
        else:
            yield _dump(list(run))[1:-1]
    yield b"]"


def _dict_pieces(mapping: dict[Any, Any]) -> Iterator[bytes]:
    yield b"{"
    for i, (key, item) in enumerate(mapping.items()):
        yield (b"," if i else b"") + _dump(str(key)) + b":"
        yield from pieces(item)
    yield b"}"


def _dump(value: Any) -> bytes:
    return _ANY.dump_json(value)
