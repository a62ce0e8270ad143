"""The response cache through the official SDKs, changed only in `base_url` and `api_key`: a
repeated call is answered from the cache (`x-proxima-cache: hit`, no attempt upstream, the
stored answer's own id), whole or replayed as a stream that the `openai` SDK's chat and
Responses stream readers and the `anthropic` SDK's message stream read like any other; a
reworded last question is a `semantic-hit`; `cache-control: no-cache` bypasses.

This module runs its own gateway (conftest.py's topology with a `[cache]` section), so that
no other suite is answered from a cache, and no earlier run either: its entries are in that
gateway's memory. The semantic cache embeds with model `mock` (the built-in provider, whose
embeddings put texts sharing words near each other); every question is fixed text, so the
similarities are too: questions in one partition (same model, instructions and parameters,
whichever API) are far apart, a reworded one 0.92 near.
"""

from __future__ import annotations

import pytest
from anthropic import Anthropic
from openai import OpenAI

CACHE = """\
[cache]
exact = { ttl = "1h" }
semantic = { ttl = "1h", threshold = 0.9, embedding_model = "mock" }

"""

BACKENDS = ["gpt", "claude", "gem"]


@pytest.fixture(scope="module")
def cached(start_gateway):
    with start_gateway("cached", CACHE) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(cached) -> OpenAI:
    return OpenAI(base_url=cached.base_url, api_key=cached.master_key, max_retries=0)


@pytest.fixture(scope="module")
def claude_client(cached) -> Anthropic:
    return Anthropic(base_url=cached.url, api_key=cached.master_key, max_retries=0)


def chat(client: OpenAI, model: str, text: str, system: str = "Be brief.", **extra):
    """A chat call read raw: (headers, completion)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        max_tokens=60,
        **extra,
    )
    return raw.headers, raw.parse()


@pytest.mark.parametrize("model", BACKENDS)
def test_a_repeat_is_served_from_the_cache_whole_and_as_a_chat_stream(client, model):
    text = "Which planet is closest to the sun"
    headers, first = chat(client, model, text)
    assert headers["x-proxima-cache"] == "miss"
    headers, again = chat(client, model, text, user="someone-else")
    assert headers["x-proxima-cache"] == "hit"
    assert headers["x-proxima-attempts"] == "0"
    assert again.id == first.id
    assert again.choices[0].message.content == first.choices[0].message.content == text
    assert again.choices[0].finish_reason == "stop"

    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        max_tokens=60,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-proxima-cache"] == "hit"
    chunks = list(raw.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("model", BACKENDS)
def test_the_anthropic_sdk_reads_a_hit_and_its_replayed_stream(claude_client, model):
    text = "Name the largest ocean"
    params = dict(
        model=model,
        max_tokens=60,
        system="Be brief.",
        messages=[{"role": "user", "content": text}],
    )
    first = claude_client.messages.with_raw_response.create(**params)
    assert first.headers["x-proxima-cache"] == "miss"
    raw = claude_client.messages.with_raw_response.create(**params)
    assert raw.headers["x-proxima-cache"] == "hit"
    message = raw.parse()
    assert message.content[0].text == text
    assert message.stop_reason == "end_turn"

    with claude_client.messages.stream(**params) as stream:
        assert stream.response.headers["x-proxima-cache"] == "hit"
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"


def test_the_responses_stream_of_a_hit_completes(client):
    text = "Spell the word cache"
    first = client.responses.with_raw_response.create(
        model="gpt", instructions="Be brief.", input=text, store=False
    )
    assert first.headers["x-proxima-cache"] == "miss"
    assert first.parse().output_text == text
    raw = client.responses.with_raw_response.create(
        model="gpt", instructions="Be brief.", input=text, store=False, stream=True
    )
    assert raw.headers["x-proxima-cache"] == "hit"
    events = list(raw.parse())
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == text
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == text


def test_a_reworded_question_is_a_semantic_hit_and_no_cache_bypasses(client):
    # Instructions of its own: the only questions in this partition are this test's, and the
    # texts are fixed, so their similarity is too (0.92 with the mock's embeddings).
    system = "Answer in one sentence."
    asked = "Which river flows through the city of Paris in France?"
    headers, first = chat(client, "gpt", asked, system=system)
    assert headers["x-proxima-cache"] == "miss"
    headers, reworded = chat(
        client, "gpt", "Which river flows through Paris, the city in France?", system=system
    )
    assert headers["x-proxima-cache"] == "semantic-hit"
    assert reworded.choices[0].message.content == asked

    headers, bypassed = chat(
        client, "gpt", asked, system=system, extra_headers={"cache-control": "no-cache"}
    )
    assert headers["x-proxima-cache"] == "bypass"
    assert headers["x-proxima-attempts"] == "1"
    assert bypassed.id != first.id
