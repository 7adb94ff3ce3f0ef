"""Chat templates come only from the model's files and render in Jinja's sandbox: a request
cannot bring its own template, and a template that reaches for Python internals fails as
the conversation's 422 instead of running."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError
from tiny_engines import asgi_client, make_engine

from service.engine import Engine
from service.errors import InvalidRequest
from service.schemas import ChatScoreRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"  # the classic sandbox escape


async def test_a_request_cannot_carry_a_template(tiny_engine: Engine) -> None:
    with pytest.raises(ValidationError):
        ChatScoreRequest.model_validate({"conversations": [CHAT], "chat_template": ESCAPE})
    async with asgi_client(tiny_engine) as client:
        for field in ("chat_template", "template"):
            body = {"conversations": [CHAT], field: ESCAPE}
            answer = await client.post("/v1/score/chat", json=body)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["param"] == field
        # A template-like extra key on a message is data the template never executes.
        extra = [{**CHAT[0], "chat_template": ESCAPE}, CHAT[1]]
        plain = await client.post("/v1/score/chat", json={"conversations": [CHAT]})
        tried = await client.post("/v1/score/chat", json={"conversations": [extra]})
        assert tried.status_code == plain.status_code == 200
        assert tried.json()["results"] == plain.json()["results"]


@pytest.fixture
def hostile_template_engine(tiny_model_dir: Path, tmp_path: Path) -> Engine:
    """The tiny model with a template that tries to list Python's classes."""
    model_dir = tmp_path / "hostile"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "chat_template.jinja").write_text(
        "{% for message in messages %}" + ESCAPE + "{{ message['content'] }}{% endfor %}"
    )
    return make_engine(model_dir)


async def test_a_template_is_rendered_in_a_sandbox(hostile_template_engine: Engine) -> None:
    engine = hostile_template_engine
    try:
        with pytest.raises(InvalidRequest) as info:
            await engine.score_chat(ChatScoreRequest(conversations=[CHAT]))
        assert "chat template" in info.value.message
        assert "unsafe" in info.value.message or "__class__" in info.value.message
        assert info.value.param == "conversations[0]", info.value.message
    finally:
        await engine.close()
