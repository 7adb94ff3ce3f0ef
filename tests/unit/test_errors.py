"""Error classes, their HTTP/gRPC mappings (CONTRACT.md table) and validation errors."""

from __future__ import annotations

import json
import typing

import pytest
from fastapi.exceptions import RequestValidationError

from service.api.errors_http import error_response, validation_error
from service.errors import (
    GRPC_CODE,
    HTTP_STATUS,
    InternalError,
    InvalidRequest,
    LMScoreError,
    MalformedRequest,
    NotFound,
    Overloaded,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
    grpc_code_name,
    http_status,
    param_from_loc,
)
from service.schemas import ErrorResponse, ErrorType

# (class, type string, HTTP status, gRPC code name), straight from the contract's table.
CONTRACT = [
    (InvalidRequest, "invalid_request", 422, "INVALID_ARGUMENT"),
    (MalformedRequest, "invalid_request", 400, "INVALID_ARGUMENT"),
    (NotFound, "not_found", 404, "NOT_FOUND"),
    (TooLarge, "too_large", 413, "INVALID_ARGUMENT"),
    (Unauthorized, "unauthorized", 401, "UNAUTHENTICATED"),
    (Overloaded, "overloaded", 429, "RESOURCE_EXHAUSTED"),
    (Timeout, "timeout", 504, "DEADLINE_EXCEEDED"),
    (Unavailable, "unavailable", 503, "UNAVAILABLE"),
    (InternalError, "internal", 500, "INTERNAL"),
    (LMScoreError, "internal", 500, "INTERNAL"),
]


@pytest.mark.parametrize(("cls", "type_", "status", "code"), CONTRACT)
def test_contract_mapping(cls: type[LMScoreError], type_: str, status: int, code: str) -> None:
    error = cls("boom")
    assert error.type == type_
    assert http_status(error) == status
    assert grpc_code_name(error) == code


def test_every_error_class_is_in_both_tables() -> None:
    classes = {cls for cls, *_ in CONTRACT}
    assert set(HTTP_STATUS) == classes
    assert set(GRPC_CODE) == classes


def test_every_error_body_is_a_documented_error_response() -> None:
    """What each error class answers is an ErrorResponse, the body the OpenAPI document
    declares for error statuses (its type list cannot miss a class)."""
    for cls, type_, status, _ in CONTRACT:
        response = error_response(cls("boom", param="texts[0]"))
        body = ErrorResponse.model_validate_json(response.body)
        assert (body.error.type, response.status_code) == (type_, status)
    assert set(typing.get_args(ErrorType)) == {type_ for _, type_, *_ in CONTRACT}


def test_subclass_falls_back_to_parent_mapping() -> None:
    class QueueFull(Overloaded):
        pass

    class Custom(LMScoreError):
        pass

    assert http_status(QueueFull("x")) == 429
    assert grpc_code_name(QueueFull("x")) == "RESOURCE_EXHAUSTED"
    assert http_status(Custom("x")) == 500
    assert grpc_code_name(Custom("x")) == "INTERNAL"


def test_malformed_is_an_invalid_request() -> None:
    assert isinstance(MalformedRequest("x"), InvalidRequest)


def test_to_dict_shape() -> None:
    error = InvalidRequest("texts[3]: empty text", param="texts[3]")
    assert error.to_dict() == {
        "error": {"type": "invalid_request", "message": "texts[3]: empty text", "param": "texts[3]"}
    }
    assert NotFound("no model 'x'").to_dict() == {
        "error": {"type": "not_found", "message": "no model 'x'", "param": None}
    }
    json.dumps(Overloaded("full", retry_after_s=1.5).to_dict())  # JSON-serialisable


def test_attributes() -> None:
    error = Overloaded("queue full", param=None, retry_after_s=2.5)
    assert str(error) == "queue full"
    assert error.message == "queue full"
    assert error.retry_after_s == 2.5
    assert error.param is None


@pytest.mark.parametrize(
    ("retry_after", "header"), [(None, None), (0.2, "1"), (1.0, "1"), (2.01, "3"), (0.0, "1")]
)
def test_error_response(retry_after: float | None, header: str | None) -> None:
    response = error_response(Overloaded("queue full", retry_after_s=retry_after))
    assert response.status_code == 429
    assert response.headers.get("retry-after") == header
    body = json.loads(bytes(response.body))
    assert body == {"error": {"type": "overloaded", "message": "queue full", "param": None}}


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "texts", 3), "texts[3]"),
        (("body", "conversations", 0, 2, "role"), "conversations[0][2].role"),
        (("body", "top_k"), "top_k"),
        (("body", "a", 0, "role"), "a[0].role"),
        (("body",), None),
        ((), None),
        (("query", "x"), "query.x"),
        (["body", "texts", 0], "texts[0]"),
    ],
)
def test_param_from_loc(loc: tuple[object, ...], param: str | None) -> None:
    assert param_from_loc(loc) == param


def test_validation_error_json_invalid_is_malformed() -> None:
    exc = RequestValidationError(
        [{"type": "json_invalid", "loc": ("body", 12), "msg": "JSON decode error", "input": {}}]
    )
    error = validation_error(exc)
    assert isinstance(error, MalformedRequest)
    assert http_status(error) == 400
    assert error.type == "invalid_request"
    assert "JSON decode error" in error.message


def test_validation_error_names_the_field() -> None:
    exc = RequestValidationError(
        [
            {
                "type": "string_too_short",
                "loc": ("body", "texts", 3),
                "msg": "String should have at least 1 character",
                "input": "",
            },
            {"type": "missing", "loc": ("body", "model"), "msg": "Field required"},
        ]
    )
    error = validation_error(exc)
    assert type(error) is InvalidRequest
    assert http_status(error) == 422
    assert error.param == "texts[3]"
    assert error.message == "texts[3]: String should have at least 1 character"


def test_validation_error_missing_field() -> None:
    exc = RequestValidationError(
        [
            {
                "type": "missing",
                "loc": ("body", "conversations", 0, 2, "role"),
                "msg": "Field required",
            }
        ]
    )
    error = validation_error(exc)
    assert error.param == "conversations[0][2].role"
    assert error.message == "conversations[0][2].role: field required"
    assert error.to_dict() == {
        "error": {"type": "invalid_request", "message": error.message, "param": error.param}
    }


def test_validation_error_without_location() -> None:
    # A whole-request validator's own problem keeps its message and names no field.
    exc = RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": "bad body"}])
    error = validation_error(exc)
    assert error.param is None
    assert error.message == "bad body"
    assert http_status(error) == 422


def test_a_body_that_is_not_an_object_names_body() -> None:
    exc = RequestValidationError([{"type": "model_type", "loc": ("body",), "msg": "bad body"}])
    error = validation_error(exc)
    assert (error.param, error.message) == ("body", "the body must be a JSON object")
    assert http_status(error) == 422


def test_validation_error_with_no_errors() -> None:
    error = validation_error(RequestValidationError([]))
    assert type(error) is InvalidRequest
    assert http_status(error) == 422
