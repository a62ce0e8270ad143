"""The official `openai` Python SDK's Responses API against a real `proxima serve`: served by
every provider kind (see conftest.py: `gpt` OpenAI-kind, `claude` Anthropic-kind, `gem`
Gemini-kind, all one `mock-upstream`), as Codex CLI uses it.
"""

from __future__ import annotations

import json

import openai
import pytest
from openai import OpenAI

BACKENDS = ["gpt", "claude", "gem"]

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url, api_key=gateway.master_key, max_retries=0)


@pytest.mark.parametrize("model", BACKENDS)
def test_text_with_instructions(client, model):
    response = client.responses.create(
        model=model,
        instructions="Be brief.",
        input="hello responses",
    )
    assert response.status == "completed"
    assert response.output_text == "hello responses"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


@pytest.mark.parametrize("model", BACKENDS)
def test_stream_events_end_with_completed(client, model):
    deltas, kinds = [], []
    with client.responses.stream(
        model=model,
        input=[
            {"role": "developer", "content": "Answer plainly."},
            {"role": "user", "content": "streamed responses text"},
        ],
        store=False,
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "".join(deltas) == "streamed responses text"
    assert final.output_text == "streamed responses text"


@pytest.mark.parametrize("model", BACKENDS)
def test_function_call_round_trip(client, model):
    first = client.responses.create(model=model, input="weather in Rome", tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].arguments) == {"text": "weather in Rome", "tool": "get_weather"}

    second = client.responses.create(
        model=model,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "weather in Rome"},
            {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "cloudy"},
        ],
    )
    assert "cloudy" in second.output_text


def test_an_unknown_previous_response_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as refused:
        client.responses.create(model="gpt", input="again", previous_response_id="resp_123")
    assert "resp_123" in str(refused.value)
