"""render_with_spans with hand-written renderers standing in for chat templates."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.scoring.chat import ChatTemplateError, Message, MessageSpan, render_with_spans

DEFAULT_SYSTEM = "You are a helpful assistant."


def chatml(messages: list[Message]) -> str:
    """ChatML, injecting a default system message when the conversation has none."""
    out = ""
    if not messages or messages[0]["role"] != "system":
        out += f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
    for m in messages:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return out


def trimming(messages: list[Message]) -> str:
    """Like many Llama-style templates: content is stripped."""
    return "<s>" + "".join(f"[{m['role']}] {m['content'].strip()} </turn>\n" for m in messages)


def raising(messages: list[Message]) -> str:
    for m in messages:
        if m["role"] not in ("user", "assistant"):
            raise ValueError(f"unsupported role {m['role']!r}")
    return "".join(m["content"] for m in messages)


def dropping(messages: list[Message]) -> str:
    """Drops system content entirely (renders only the role)."""
    return "".join(
        f"<{m['role']}>" + ("" if m["role"] == "system" else m["content"]) + "<end>"
        for m in messages
    )


def _conv(*pairs: tuple[str, str]) -> list[Message]:
    return [{"role": r, "content": c} for r, c in pairs]


def test_chatml_spans_point_at_content() -> None:
    msgs = _conv(("user", "Hi there"), ("assistant", "Hello! How can I help?"))
    chat = render_with_spans(msgs, chatml)
    assert chat.text == chatml(msgs)
    assert len(chat.spans) == 2
    for span, m in zip(chat.spans, msgs, strict=True):
        assert chat.text[span.start : span.end] == m["content"]
        assert chat.text[span.end : span.turn_end] == "<|im_end|>"
        assert chat.text[span.turn_end] == "\n"
    # The injected system message precedes the first span and belongs to no message.
    assert chat.text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}")
    assert chat.spans[0].start > len(DEFAULT_SYSTEM)


def test_chatml_with_explicit_system() -> None:
    msgs = _conv(("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"))
    chat = render_with_spans(msgs, chatml)
    assert DEFAULT_SYSTEM not in chat.text
    assert [chat.text[s.start : s.end] for s in chat.spans] == ["Be brief.", "2+2?", "4"]
    starts = [s.start for s in chat.spans]
    assert starts == sorted(starts)
    for a, b in zip(chat.spans, chat.spans[1:], strict=False):
        assert a.turn_end <= b.start


@pytest.mark.parametrize("content", ["assistant", "user", "system", "im_start", "<|im_end|>"])
def test_content_equal_to_template_text_is_located_exactly(content: str) -> None:
    msgs = _conv(("user", content), ("assistant", content))
    chat = render_with_spans(msgs, chatml)
    expected_user = chat.text.index(f"<|im_start|>user\n{content}") + len("<|im_start|>user\n")
    expected_asst = chat.text.index(f"<|im_start|>assistant\n{content}") + len(
        "<|im_start|>assistant\n"
    )
    assert chat.spans[0] == MessageSpan(
        expected_user, expected_user + len(content), expected_user + len(content) + 10
    )
    assert chat.spans[1].start == expected_asst
    assert chat.text[chat.spans[1].start : chat.spans[1].end] == content


def test_repeated_content_gets_distinct_spans() -> None:
    msgs = _conv(("user", "same"), ("assistant", "same"), ("user", "same"))
    chat = render_with_spans(msgs, chatml)
    starts = [s.start for s in chat.spans]
    assert len(set(starts)) == 3
    assert all(chat.text[s.start : s.end] == "same" for s in chat.spans)


def test_empty_content() -> None:
    msgs = _conv(("user", "question"), ("assistant", ""))
    chat = render_with_spans(msgs, chatml)
    last = chat.spans[1]
    assert last.start == last.end
    assert chat.text[last.end : last.turn_end] == "<|im_end|>"


def test_trimmed_content_is_accepted() -> None:
    msgs = _conv(("user", "  padded question \n"), ("assistant", "\tanswer  "))
    chat = render_with_spans(msgs, trimming)
    assert [chat.text[s.start : s.end] for s in chat.spans] == ["padded question", "answer"]
    for span in chat.spans:
        # Trailing whitespace of the turn is not part of the end-of-turn text.
        assert chat.text[span.end : span.turn_end] == " </turn>"


def mistral_like(messages: list[Message]) -> str:
    """Mistral's template: the system prompt joins the first user message, and the joined
    text is stripped, so only its far ends lose whitespace."""
    system = messages[0]["content"].strip() + "\n\n" if messages[0]["role"] == "system" else ""
    turns = messages[1:] if system else messages
    out = "<s>"
    for i, m in enumerate(turns):
        content = system + m["content"] if i == 0 else m["content"]
        if m["role"] == "user":
            out += f"[INST] {content.strip()} [/INST]"
        else:
            out += f" {content.strip()} </s>"
    return out


def test_content_trimmed_on_one_side_only_is_accepted() -> None:
    msgs = _conv(("system", "Be brief."), ("user", "  What is 2+2?  "), ("assistant", " 4 "))
    chat = render_with_spans(msgs, mistral_like)
    assert [chat.text[s.start : s.end] for s in chat.spans] == ["Be brief.", "  What is 2+2?", "4"]


def test_renderer_exception_becomes_chat_template_error() -> None:
    msgs = _conv(("user", "a"), ("tool", "b"))
    with pytest.raises(ChatTemplateError, match="unsupported role") as info:
        render_with_spans(msgs, raising)
    assert info.value.index is None  # the full render fails before any message probe
    assert isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, ValueError)


def test_renderer_failing_only_on_a_probe_names_the_message() -> None:
    def picky(messages: list[Message]) -> str:
        if any("\ue000" in m["content"] and m["role"] == "assistant" for m in messages):
            raise RuntimeError("no private-use characters")
        return chatml(messages)

    with pytest.raises(ChatTemplateError) as info:
        render_with_spans(_conv(("user", "a"), ("assistant", "b")), picky)
    assert info.value.index == 1


def test_dropped_content_raises_with_message_index() -> None:
    msgs = _conv(("user", "hi"), ("system", "secret"), ("assistant", "ok"))
    with pytest.raises(ChatTemplateError, match="verbatim") as info:
        render_with_spans(msgs, dropping)
    assert info.value.index == 1


def test_altered_content_raises_with_message_index() -> None:
    def upper(messages: list[Message]) -> str:
        return "".join(f"<{m['role']}>{m['content'].upper()}<end>" for m in messages)

    with pytest.raises(ChatTemplateError) as info:
        render_with_spans(_conv(("user", "hello")), upper)
    assert info.value.index == 0


def test_input_messages_are_not_modified() -> None:
    msgs = _conv(("user", "x"), ("assistant", "y"))
    snapshot = [dict(m) for m in msgs]
    render_with_spans(msgs, chatml)
    assert msgs == snapshot


def test_turn_end_without_end_of_turn_text() -> None:
    def plain(messages: list[Message]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages)

    chat = render_with_spans(_conv(("user", "a b"), ("assistant", "c")), plain)
    assert all(s.turn_end == s.end for s in chat.spans)
    assert chat.text[chat.spans[1].start : chat.spans[1].end] == "c"


def counting(
    render: Callable[[list[Message]], str],
) -> tuple[Callable[[list[Message]], str], list[int]]:
    calls: list[int] = []

    def counted(messages: list[Message]) -> str:
        calls.append(len(messages))
        return render(messages)

    return counted, calls


def test_a_long_conversation_is_located_in_one_probe() -> None:
    """Two renderings locate every content (the real one and one with every content
    replaced), then one per message for its end of turn: not two per message, each of the
    whole conversation, which made 512 messages take seconds on the model's thread."""
    msgs = _conv(*[("user" if k % 2 == 0 else "assistant", f"turn {k}") for k in range(200)])
    render, calls = counting(chatml)
    chat = render_with_spans(msgs, render)
    assert [chat.text[s.start : s.end] for s in chat.spans] == [m["content"] for m in msgs]
    assert all(chat.text[s.end : s.turn_end] == "<|im_end|>" for s in chat.spans)
    assert len(calls) == 2 + len(msgs)
    assert sorted(calls[2:]) == list(range(1, len(msgs) + 1))  # the prefixes, once each


def qwen3_like(messages: list[Message]) -> str:
    """Qwen3's template: the last answer gets a reasoning block, its own when its content
    holds one (rendered as written), an empty one otherwise."""
    out = ""
    for k, m in enumerate(messages):
        content = m["content"]
        if m["role"] == "assistant" and k == len(messages) - 1 and "</think>" not in content:
            content = "<think>\n\n</think>\n\n" + content
        out += f"<|im_start|>{m['role']}\n{content}<|im_end|>\n"
    return out


def test_an_answer_with_its_own_reasoning_is_located() -> None:
    answer = "<think>\nadd them\n</think>\n\n4"
    chat = render_with_spans(_conv(("user", "2+2?"), ("assistant", answer)), qwen3_like)
    span = chat.spans[1]
    assert chat.text[span.start : span.end] == answer
    assert chat.text[span.end : span.turn_end] == "<|im_end|>"


def test_an_earlier_answer_keeps_its_end_of_turn_when_the_last_is_rendered_otherwise() -> None:
    """Cut after an earlier answer, Qwen3 renders that answer with a reasoning block the
    whole conversation does not have: its end of turn is still found."""
    msgs = _conv(("user", "hi"), ("assistant", "Hello"), ("user", "more"), ("assistant", "Sure"))
    chat = render_with_spans(msgs, qwen3_like)
    assert [chat.text[s.start : s.end] for s in chat.spans] == ["hi", "Hello", "more", "Sure"]
    assert [chat.text[s.end : s.turn_end] for s in chat.spans] == ["<|im_end|>"] * 4


def mistral_v3_like(messages: list[Message]) -> str:
    """Mistral v0.3's template: the system prompt joins the last user turn only (and is
    left out when the conversation ends with an answer)."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages if m["role"] != "system"]
    out = "<s>"
    for k, m in enumerate(turns):
        if m["role"] == "user":
            head = f"{system[0]}\n\n" if system and k == len(turns) - 1 else ""
            out += f"[INST] {head}{m['content']}[/INST]"
        else:
            out += f" {m['content']}</s>"
    return out


def test_unscored_content_the_template_drops_is_placed_nowhere() -> None:
    msgs = _conv(("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"))
    with pytest.raises(ChatTemplateError) as info:
        render_with_spans(msgs, mistral_v3_like)  # every message required
    assert info.value.index == 0
    chat = render_with_spans(msgs, mistral_v3_like, required=[2])
    texts = [chat.text[s.start : s.end] for s in chat.spans]
    assert texts == ["", "2+2?", "4"] and chat.spans[0].turn_end == 0
    assert chat.text[chat.spans[2].end : chat.spans[2].turn_end] == "</s>"


def test_content_the_template_moves_after_later_messages_is_located_there() -> None:
    msgs = _conv(("system", "Be brief."), ("user", "2+2?"), ("assistant", "4"), ("user", "and?"))
    chat = render_with_spans(msgs, mistral_v3_like)
    texts = [chat.text[s.start : s.end] for s in chat.spans]
    assert texts == ["Be brief.", "2+2?", "4", "and?"]
    assert chat.spans[0].start > chat.spans[2].end  # in the last user turn


def test_a_trailing_space_the_template_trims_is_not_content() -> None:
    """Llama 2 writes ``content.strip()`` then a space: an answer's own trailing space is
    trimmed, and the template's space is not taken for it."""

    def llama2_like(messages: list[Message]) -> str:
        return "".join(
            f"[INST] {m['content'].strip()} [/INST]"
            if m["role"] == "user"
            else f" {m['content'].strip()} </s>"
            for m in messages
        )

    for answer in ("Hello world", "Hello world ", " Hello world  "):
        chat = render_with_spans(_conv(("user", "hi"), ("assistant", answer)), llama2_like)
        span = chat.spans[1]
        assert chat.text[span.start : span.end] == "Hello world"
        assert chat.text[span.end : span.turn_end] == " </s>"
