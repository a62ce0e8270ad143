"""Retrieval in use through the official SDKs, changed only in `base_url` and `api_key`:
documents uploaded (`client.files`) into a vector store (`client.vector_stores`), then
searched by the gateway for the model of any backend — the Responses API's `file_search` tool
(its `file_search_call` item, `include=["file_search_call.results"]`, `file_citation`
annotations, streamed and stored), header `x-proxima-vector-stores` on chat completions and on
`/v1/messages` (the `anthropic` SDK), and a conversation whose metadata names its stores.

Behind the gateway (see conftest.py, which also gives `client` and `claude_client`) one
`mock-upstream` speaks all three wire formats. A prompt saying `mock-echo-request` makes it
answer with the request it received, so the answer shows what the gateway really sent
upstream: the passages and their file names. That echo also holds the passages' `[1]`
markers, which the gateway turns into citations.
"""

from __future__ import annotations

import time
import uuid

import openai
import pytest

HANDBOOK = "Employees get thirty vacation days per year, booked in the HR portal."
PARKING = "Visitors park in the north lot behind building C."
QUESTION = "How many vacation days do employees get per year?"
ECHO = "mock-echo-request"
INGESTION_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def store(client):
    """A vector store of the handbook and the parking note, ingested; (store id, {file id: name})."""
    tag = uuid.uuid4().hex[:8]
    files = {}
    for name, text in [(f"handbook-{tag}.txt", HANDBOOK), (f"parking-{tag}.md", PARKING)]:
        uploaded = client.files.create(file=(name, text.encode()), purpose="assistants")
        assert uploaded.filename == name
        files[uploaded.id] = name
    created = client.vector_stores.create(name=f"office-{tag}", file_ids=list(files))
    assert created.id.startswith("vs_")
    deadline = time.monotonic() + INGESTION_TIMEOUT_S
    while client.vector_stores.retrieve(created.id).file_counts.completed < len(files):
        assert time.monotonic() < deadline, "the store's files were not ingested in time"
        time.sleep(0.1)
    listed = client.vector_stores.files.list(created.id)
    assert {f.id for f in listed} == set(files)
    assert all(f.status == "completed" for f in listed)
    return created.id, files


def handbook_name(files: dict[str, str]) -> str:
    return next(name for name in files.values() if name.startswith("handbook"))


# ---------------------------------------------------------------- the file_search tool


def check_file_search(response, store, include: bool) -> None:
    """The search item first, then the message; the upstream got the passages; citations."""
    _, files = store
    call, message = response.output
    assert call.type == "file_search_call"
    assert call.id.startswith("fs_") and call.status == "completed"
    assert call.queries == [f"{QUESTION} {ECHO}"]
    if include:
        # Best first: the handbook answers the question (the parking note may follow).
        assert HANDBOOK in call.results[0].text
        for result in call.results:
            assert result.filename == files[result.file_id]
            assert 0 < result.score <= 1
            assert HANDBOOK in result.text or PARKING in result.text
    else:
        assert call.results is None

    assert message.type == "message"
    text = message.content[0].text
    # The echoed upstream request: the passages with their file names, no file_search tool.
    assert HANDBOOK in text
    assert f"[1] {handbook_name(files)}:" in text
    assert "file_search" not in text
    annotations = message.content[0].annotations
    assert annotations, "the [1] markers are cited"
    for annotation in annotations:
        assert annotation.type == "file_citation"
        assert annotation.filename == files[annotation.file_id]
        assert text[annotation.index] == "["
    if include:
        assert annotations[0].file_id == call.results[0].file_id


@pytest.mark.parametrize("model", ["claude", "gem"])
@pytest.mark.parametrize("include", [False, True])
def test_file_search_on_any_backend(client, store, model, include):
    store_id, _ = store
    extra = {"include": ["file_search_call.results"]} if include else {}
    raw = client.responses.with_raw_response.create(
        model=model,
        instructions="Answer from the documents.",
        input=f"{QUESTION} {ECHO}",
        tools=[{"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 4}],
        **extra,
    )
    response = raw.parse()
    assert response.status == "completed"
    check_file_search(response, store, include)
    if include:
        assert raw.headers["x-proxima-retrieved"] == str(len(response.output[0].results))
    assert response.tools[0].type == "file_search"

    stored = client.responses.retrieve(response.id)
    assert stored.model_dump() == response.model_dump()


def test_file_search_streams_its_call_and_citations(client, store):
    store_id, _ = store
    kinds, annotations = [], []
    with client.responses.stream(
        model="gem",
        input=f"{QUESTION} {ECHO}",
        tools=[{"type": "file_search", "vector_store_ids": [store_id]}],
        include=["file_search_call.results"],
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.annotation.added":
                annotations.append(event.annotation)
        final = stream.get_final_response()
    # The search item opens the output, its three events inside it, before any text.
    searching = [k.rsplit(".", 1)[1] for k in kinds if k.startswith("response.file_search_call.")]
    assert searching == ["in_progress", "searching", "completed"]
    assert kinds[2] == "response.output_item.added" and kinds[6] == "response.output_item.done"
    assert kinds[-1] == "response.completed"
    check_file_search(final, store, include=True)
    kept = final.output[1].content[0].annotations
    assert [dict(a) for a in annotations] == [a.model_dump() for a in kept]
    stored = client.responses.retrieve(final.id)
    assert stored.output[0].model_dump() == final.output[0].model_dump()


def test_a_store_of_nobody_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="claude",
            input=QUESTION,
            tools=[{"type": "file_search", "vector_store_ids": ["vs_nobody_has_this"]}],
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": QUESTION}],
            extra_headers={"x-proxima-vector-stores": "vs_nobody_has_this"},
        )


# ---------------------------------------------------------------- the header, conversations


@pytest.mark.parametrize("model", ["gpt", "claude", "gem"])
def test_header_on_chat_completions(client, store, model):
    store_id, files = store
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": f"{QUESTION} {ECHO}"},
        ],
        extra_headers={"x-proxima-vector-stores": store_id},
    )
    assert int(raw.headers["x-proxima-retrieved"]) >= 1
    sent = raw.parse().choices[0].message.content
    assert HANDBOOK in sent and f"[1] {handbook_name(files)}:" in sent
    # After the request's own instructions (the echo sorts an object's keys, so only the
    # order within the instructions, or OpenAI's list of messages, shows).
    assert sent.index("Answer in one sentence.") < sent.index(HANDBOOK)
    if model == "gpt":
        assert sent.index(HANDBOOK) < sent.rindex(QUESTION)


def test_header_on_messages_with_the_anthropic_sdk(claude_client, store):
    store_id, files = store
    raw = claude_client.messages.with_raw_response.create(
        model="claude",
        max_tokens=200,
        messages=[{"role": "user", "content": f"Where do visitors park? {ECHO}"}],
        extra_headers={"x-proxima-vector-stores": store_id},
    )
    assert int(raw.headers["x-proxima-retrieved"]) >= 1
    sent = raw.parse().content[0].text
    assert PARKING in sent
    assert any(name in sent for name in files.values())


def test_a_conversation_retrieves_from_its_own_stores(client, store):
    store_id, files = store
    conversation = client.conversations.create(metadata={"vector_store_ids": store_id})
    headers = {"x-proxima-conversation": conversation.id}

    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers=headers,
    )
    assert int(raw.headers["x-proxima-retrieved"]) >= 1
    assert int(raw.headers["x-proxima-context-tokens"]) > 0
    # The passages were sent, not stored: the conversation holds the question and the answer.
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [item.role for item in items] == ["user", "assistant"]
    assert all(HANDBOOK not in part.text for item in items for part in item.content)

    # Every turn retrieves again, for its own question.
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "user", "content": f"And where do visitors park? {ECHO}"}],
        extra_headers=headers,
    )
    assert int(raw.headers["x-proxima-retrieved"]) >= 1
    sent = raw.parse().choices[0].message.content
    assert PARKING in sent and any(f"{name}:" in sent for name in files.values())
    assert QUESTION in sent, "the first turn is in the context"
