"""The official `anthropic` Python SDK against a real `proxima serve`, changed only in
`base_url` and `api_key`: `/v1/messages` served by every provider kind.

Behind the gateway (see conftest.py), one `mock-upstream` speaks all three wire formats:
model `gpt` is an OpenAI-kind provider, `claude` an Anthropic-kind one, `gem` a Gemini-kind
one. Whatever the backend, the answer must be what an Anthropic client expects.
"""

from __future__ import annotations

import anthropic
import pytest
from anthropic import Anthropic

BACKENDS = ["gpt", "claude", "gem"]

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TIME = {
    "name": "get_time",
    "description": "Current time in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def client(gateway) -> Anthropic:
    # The SDK appends /v1/messages itself: its base URL is the gateway's root.
    return Anthropic(base_url=gateway.url, api_key=gateway.master_key, max_retries=0)


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def tool_uses(message) -> list:
    return [block for block in message.content if block.type == "tool_use"]


@pytest.mark.parametrize("model", BACKENDS)
def test_text_answer_with_usage(client, model):
    message = client.messages.create(
        model=model,
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello from anthropic"}],
        metadata={"user_id": "e2e-user"},
    )
    assert message.type == "message" and message.role == "assistant"
    assert text_of(message) == "hello from anthropic"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_text_matches_the_whole_answer(client, model):
    with client.messages.stream(
        model=model,
        max_tokens=100,
        messages=[{"role": "user", "content": "streamed words arrive in order"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, "the answer should arrive in several pieces"
    assert "".join(pieces) == "streamed words arrive in order"
    assert text_of(final) == "streamed words arrive in order"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", BACKENDS)
def test_tool_call_and_its_streamed_twin(client, model):
    request = dict(
        model=model,
        max_tokens=200,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather in Paris"}],
    )
    message = client.messages.create(**request)
    calls = tool_uses(message)
    assert message.stop_reason == "tool_use"
    assert [c.name for c in calls] == ["get_weather"]
    assert calls[0].input == {"text": "weather in Paris", "tool": "get_weather"}

    with client.messages.stream(**request) as stream:
        final = stream.get_final_message()
    streamed = tool_uses(final)
    assert [c.input for c in streamed] == [calls[0].input]
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("model", BACKENDS)
def test_parallel_tool_calls_streamed(client, model):
    with client.messages.stream(
        model=model,
        max_tokens=200,
        tools=[WEATHER, TIME],
        messages=[{"role": "user", "content": "parallel please"}],
    ) as stream:
        final = stream.get_final_message()
    calls = tool_uses(final)
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert all(c.input["text"] == "parallel please" for c in calls)
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize("model", BACKENDS)
def test_tool_result_round_trip(client, model):
    first = client.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather in Oslo"}],
    )
    call = tool_uses(first)[0]
    second = client.messages.create(
        model=model,
        max_tokens=200,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "weather in Oslo"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}],
            },
        ],
    )
    assert "sunny, 21C" in text_of(second)
    assert second.stop_reason == "end_turn"


@pytest.mark.parametrize("model", BACKENDS)
def test_count_tokens(client, model):
    counted = client.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "count these four words"}]
    )
    assert counted.input_tokens > 0


def test_thinking_blocks_come_back_signed_from_an_anthropic_backend(client):
    message = client.messages.create(
        model="claude",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2000},
        messages=[{"role": "user", "content": "think first"}],
    )
    thinking = [b for b in message.content if b.type == "thinking"]
    assert thinking and thinking[0].signature
    assert text_of(message) == "think first"


def test_beta_messages_as_claude_code_sends_them(client):
    # Claude Code uses the beta client: `?beta=true` and an `anthropic-beta` header.
    message = client.beta.messages.create(
        model="gpt",
        max_tokens=100,
        betas=["interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14"],
        system="You are a coding agent.",
        tools=[],
        messages=[{"role": "user", "content": "hi from a coding agent"}],
    )
    assert text_of(message) == "hi from a coding agent"


def test_errors_are_anthropic_exceptions(client, gateway):
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert not_found.value.status_code == 404
    assert not_found.value.body["type"] == "error"
    assert "no-such-model" in not_found.value.body["error"]["message"]

    wrong_key = Anthropic(base_url=gateway.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong_key.messages.create(model="gpt", max_tokens=10, messages=[{"role": "user", "content": "x"}])
