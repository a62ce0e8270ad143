"""Server-side conversations through the official SDKs, changed only in `base_url` and
`api_key`: the Conversations API (`client.conversations`), chat turns that name a conversation
with header `x-proxima-conversation` on every provider kind (and through the `anthropic` SDK),
and stored responses (`store`, `previous_response_id`, `conversation`).

Behind the gateway (see conftest.py) one `mock-upstream` speaks all three wire formats and
echoes the last user message, so a second turn's answer says nothing about what the upstream
was sent. What the gateway assembled shows instead in the conversation's stored items and in
the `x-proxima-context-tokens` header (the assembled prompt's tokens), which grows when the
first turn is sent along with the second.
"""

from __future__ import annotations

import uuid

import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

BACKENDS = ["gpt", "claude", "gem"]


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url, api_key=gateway.master_key, max_retries=0)


@pytest.fixture(scope="module")
def claude_client(gateway) -> Anthropic:
    # The SDK appends /v1/messages itself: its base URL is the gateway's root.
    return Anthropic(base_url=gateway.url, api_key=gateway.master_key, max_retries=0)


def unique(prefix: str = "conv_e2e") -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def message(role: str, text: str) -> dict:
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}


def text_of(item) -> str:
    """The text of a message item, whatever its content parts are."""
    return "".join(getattr(part, "text", "") or "" for part in item.content)


def transcript(client: OpenAI, conversation: str) -> list[tuple[str, str]]:
    """The conversation's message items, oldest first, as (role, text)."""
    return [
        (item.role, text_of(item))
        for item in client.conversations.items.list(conversation, order="asc", limit=100)
        if item.type == "message"
    ]


# ---------------------------------------------------------------- the Conversations API


def test_conversation_create_retrieve_update_delete(client):
    tag = uuid.uuid4().hex
    conv = client.conversations.create(
        metadata={"topic": "e2e", "tag": tag},
        items=[message("user", f"hello {tag}")],
    )
    assert conv.id.startswith("conv_") and conv.object == "conversation"
    assert conv.metadata == {"topic": "e2e", "tag": tag}
    assert conv.created_at > 0

    fetched = client.conversations.retrieve(conv.id)
    assert (fetched.id, fetched.metadata, fetched.created_at) == (
        conv.id,
        conv.metadata,
        conv.created_at,
    )
    assert transcript(client, conv.id) == [("user", f"hello {tag}")]

    updated = client.conversations.update(conv.id, metadata={"topic": "changed"})
    assert updated.id == conv.id and updated.metadata == {"topic": "changed"}
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "changed"}

    deleted = client.conversations.delete(conv.id)
    assert deleted.id == conv.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.delete(conv.id)


def test_unknown_conversation_is_not_found(client):
    made_up = unique("conv")
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(made_up)
    with pytest.raises(openai.NotFoundError):
        client.conversations.update(made_up, metadata={"a": "b"})
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.create(made_up, items=[message("user", "hi")])
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(made_up)


def test_items_add_list_paginate_retrieve_delete(client):
    conv = client.conversations.create(items=[message("user", "one")])
    added = client.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "two"}]},
            message("user", "three"),
            {"type": "message", "role": "assistant", "content": "four"},
            message("user", "five"),
        ],
    )
    assert [text_of(i) for i in added.data] == ["two", "three", "four", "five"]
    assert [i.role for i in added.data] == ["assistant", "user", "assistant", "user"]

    # Pages of two, newest first, walked by the SDK's auto-pagination (`after` = last id).
    first_page = client.conversations.items.list(conv.id, limit=2)
    assert len(first_page.data) == 2 and first_page.has_more is True
    newest_first = [text_of(i) for i in client.conversations.items.list(conv.id, limit=2)]
    assert newest_first == ["five", "four", "three", "two", "one"]

    oldest_first = list(client.conversations.items.list(conv.id, order="asc"))
    assert [text_of(i) for i in oldest_first] == ["one", "two", "three", "four", "five"]
    assert len({i.id for i in oldest_first}) == 5

    target = oldest_first[2]
    fetched = client.conversations.items.retrieve(target.id, conversation_id=conv.id)
    assert fetched.id == target.id and fetched.type == "message"
    assert fetched.role == "user" and text_of(fetched) == "three"

    after = client.conversations.items.delete(target.id, conversation_id=conv.id)
    assert after.id == conv.id
    assert [text_of(i) for i in client.conversations.items.list(conv.id, order="asc")] == [
        "one",
        "two",
        "four",
        "five",
    ]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(target.id, conversation_id=conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete(target.id, conversation_id=conv.id)
    client.conversations.delete(conv.id)


def test_unknown_item_type_is_a_bad_request(client):
    conv = client.conversations.create()
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.create(conv.id, items=[{"type": "no_such_item", "text": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.conversations.create(items=[{"type": "no_such_item", "text": "x"}])
    # Nothing of the bad request was stored.
    assert list(client.conversations.items.list(conv.id)) == []
    client.conversations.delete(conv.id)


# ------------------------------------------------------- chat turns with x-proxima-conversation


def chat_turn(client: OpenAI, model: str, conversation: str, text: str):
    """One chat turn sending only its new message; returns (completion, context tokens)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        extra_headers={"x-proxima-conversation": conversation},
    )
    tokens = raw.headers.get("x-proxima-context-tokens")
    assert tokens is not None, f"no x-proxima-context-tokens header: {dict(raw.headers)}"
    return raw.parse(), int(tokens)


@pytest.mark.parametrize("model", BACKENDS)
def test_chat_turns_carry_the_conversation(client, model):
    conv = unique()
    first_text = f"first turn {uuid.uuid4().hex} " + "remember this please " * 20
    first, first_tokens = chat_turn(client, model, conv, first_text)
    assert first.choices[0].message.content == first_text

    second, second_tokens = chat_turn(client, model, conv, "second turn")
    # The mock echoes the last user message: the new one stays the last.
    assert second.choices[0].message.content == "second turn"
    # The prompt of the second turn held the first turn (question and answer) as well.
    assert second_tokens > first_tokens + 40, (first_tokens, second_tokens)

    assert transcript(client, conv) == [
        ("user", first_text),
        ("assistant", first_text),
        ("user", "second turn"),
        ("assistant", "second turn"),
    ]
    assert client.conversations.retrieve(conv).id == conv
    client.conversations.delete(conv)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv)


def test_conversation_from_the_api_continued_by_chat(client):
    conv = client.conversations.create(
        items=[
            message("user", "my name is Ada"),
            {"type": "message", "role": "assistant", "content": "hello Ada"},
        ]
    )
    _, with_history = chat_turn(client, "gpt", conv.id, "what is my name?")
    _, alone = chat_turn(client, "gpt", unique(), "what is my name?")
    assert with_history > alone, (with_history, alone)
    assert transcript(client, conv.id)[-2:] == [
        ("user", "what is my name?"),
        ("assistant", "what is my name?"),
    ]


def test_anthropic_sdk_turns_visible_through_openai_sdk(client, claude_client):
    conv = unique()
    for text in ("anthropic first turn", "anthropic second turn"):
        reply = claude_client.messages.create(
            model="claude",
            max_tokens=100,
            messages=[{"role": "user", "content": text}],
            extra_headers={"x-proxima-conversation": conv},
        )
        assert "".join(b.text for b in reply.content if b.type == "text") == text
    assert transcript(client, conv) == [
        ("user", "anthropic first turn"),
        ("assistant", "anthropic first turn"),
        ("user", "anthropic second turn"),
        ("assistant", "anthropic second turn"),
    ]
    # Newest first by default, through the SDK's pagination.
    assert [text_of(i) for i in client.conversations.items.list(conv, limit=1)][0] == (
        "anthropic second turn"
    )


# ------------------------------------------------------------------- stored responses


def test_stored_response_retrieve_input_items_delete(client):
    text = f"store me {uuid.uuid4().hex}"
    created = client.responses.create(model="gpt", input=text, store=True)
    assert created.status == "completed" and created.output_text == text

    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == text

    inputs = list(client.responses.input_items.list(created.id))
    assert [(i.type, i.role) for i in inputs] == [("message", "user")]
    assert text_of(inputs[0]) == text

    deleted = client.responses.delete(created.id)
    assert deleted is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(created.id)


def test_previous_response_id_chain(client):
    first_text = f"chain start {uuid.uuid4().hex} " + "long context words " * 20
    first = client.responses.create(model="gpt", input=first_text, store=True)
    second = client.responses.create(
        model="gpt", input="chain next", previous_response_id=first.id, store=True
    )
    assert second.output_text == "chain next"
    assert second.previous_response_id == first.id
    # The second prompt held the first turn: more input tokens than the first one alone.
    assert second.usage.input_tokens > first.usage.input_tokens, (
        first.usage.input_tokens,
        second.usage.input_tokens,
    )
    assert client.responses.retrieve(second.id).previous_response_id == first.id


def test_streamed_response_is_retrievable_after_completed(client):
    text = f"streamed and stored {uuid.uuid4().hex}"
    stream = client.responses.create(model="gpt", input=text, stream=True, store=True)
    completed = None
    for event in stream:
        if event.type == "response.completed":
            completed = event.response
    assert completed is not None and completed.output_text == text
    fetched = client.responses.retrieve(completed.id)
    assert fetched.id == completed.id and fetched.status == "completed"
    assert fetched.output_text == text


def test_responses_on_a_conversation(client):
    conv = client.conversations.create(metadata={"via": "responses"})
    first = client.responses.create(model="gpt", conversation=conv.id, input="responses turn one")
    second = client.responses.create(model="gpt", conversation=conv.id, input="responses turn two")
    assert first.output_text == "responses turn one"
    assert second.output_text == "responses turn two"
    assert second.conversation is not None and second.conversation.id == conv.id
    assert second.usage.input_tokens > first.usage.input_tokens
    assert transcript(client, conv.id) == [
        ("user", "responses turn one"),
        ("assistant", "responses turn one"),
        ("user", "responses turn two"),
        ("assistant", "responses turn two"),
    ]


@pytest.mark.parametrize("model", BACKENDS)
def test_streamed_chat_turns_are_stored(client, model):
    conv = unique()
    for text in ("streamed one", "streamed two"):
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": text}],
            stream=True,
            extra_headers={"x-proxima-conversation": conv},
        )
        answer = "".join(
            chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
        )
        assert answer == text
    assert transcript(client, conv) == [
        ("user", "streamed one"),
        ("assistant", "streamed one"),
        ("user", "streamed two"),
        ("assistant", "streamed two"),
    ]


def test_conversation_in_the_chat_body(client):
    conv = unique()
    for text in ("body turn one", "body turn two"):
        reply = client.chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": text}],
            extra_body={"conversation": conv},
        )
        assert reply.choices[0].message.content == text
    assert [t for _, t in transcript(client, conv)] == [
        "body turn one",
        "body turn one",
        "body turn two",
        "body turn two",
    ]


def test_bad_metadata_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.conversations.create(metadata={f"k{i}": "v" for i in range(17)})
    conv = client.conversations.create(metadata={"ok": "yes"})
    with pytest.raises(openai.BadRequestError):
        client.conversations.update(conv.id, metadata={"k": "v" * 513})
    assert client.conversations.retrieve(conv.id).metadata == {"ok": "yes"}
    client.conversations.delete(conv.id)
