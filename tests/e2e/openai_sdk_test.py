"""The official `openai` Python SDK against a real `proxima serve`, changed only in `base_url`
and `api_key`.

Behind the gateway (see conftest.py): model `gpt` goes to the `mock-upstream` binary speaking
OpenAI's wire format (it echoes the last user message, calls the first offered tool, and calls
two tools when the text says "parallel"); model `mock` is the gateway's built-in mock provider;
model `embed` is the upstream's embeddings.
"""

from __future__ import annotations

import asyncio
import json
from array import array

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
]


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url, api_key=gateway.master_key)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def as_f32(vector: list[float]) -> bytes:
    return array("f", vector).tobytes()


def reassemble_tool_calls(chunks) -> tuple[list[dict], str | None]:
    """Joins streamed tool-call deltas by index, as SDK users must; returns calls, finish reason."""
    calls: dict[int, dict] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.finish_reason:
                finish = choice.finish_reason
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                if delta.id:
                    call["id"] = delta.id
                if delta.function and delta.function.name:
                    call["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    call["arguments"] += delta.function.arguments
    return [calls[i] for i in sorted(calls)], finish


# ---------------------------------------------------------------------------- models


def test_models_list_contains_configured_models(client):
    ids = {model.id for model in client.models.list()}
    assert {"gpt", "mock", "embed"} <= ids


def test_models_retrieve(client):
    model = client.models.retrieve("gpt")
    assert model.id == "gpt"
    assert model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# ---------------------------------------------------------------------------- chat


@pytest.mark.parametrize(("model", "upstream_model"), [("gpt", "mock-gpt"), ("mock", "mock")])
def test_chat_echoes_with_usage(client, model, upstream_model):
    text = "hello from the official sdk"
    response = client.chat.completions.create(model=model, messages=user(text))
    assert response.object == "chat.completion"
    # The gateway reports the upstream model that answered, as OpenAI reports the snapshot.
    assert response.model == upstream_model
    assert len(response.choices) == 1
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == text
    assert choice.finish_reason == "stop"
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == len(text.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_sampling_fields_reach_the_upstream(client):
    text = "one two three four"
    cut = client.chat.completions.create(model="gpt", messages=user(text), max_tokens=2)
    assert cut.choices[0].message.content == "one two"
    assert cut.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(model="gpt", messages=user(text), stop=["three"])
    assert stopped.choices[0].message.content == "one two "
    assert stopped.choices[0].finish_reason == "stop"


def test_chat_image_parts_reach_the_upstream(client):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    response = client.chat.completions.create(model="gpt", messages=messages)
    assert response.choices[0].message.content == "what is this [1 image(s)]"


@pytest.mark.parametrize("model", ["gpt", "mock"])
def test_stream_concatenates_to_the_echo(client, model):
    text = "stream me word by word please"
    stream = client.chat.completions.create(model=model, messages=user(text), stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3, "the answer should arrive in several chunks"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    # Without include_usage, no chunk carries usage.
    assert all(chunk.usage is None for chunk in chunks)


@pytest.mark.parametrize("model", ["gpt", "mock"])
def test_stream_include_usage_puts_usage_on_the_last_chunk(client, model):
    text = "count my tokens"
    stream = client.chat.completions.create(
        model=model,
        messages=user(text),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.usage is not None
    assert last.choices == []
    assert last.usage.completion_tokens == len(text.split())
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


# ---------------------------------------------------------------------------- tools


def test_tool_call(client):
    text = "what is the weather in Paris"
    response = client.chat.completions.create(model="gpt", messages=user(text), tools=TOOLS)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"text": text, "tool": "get_weather"}


def test_tool_choice_names_the_tool(client):
    response = client.chat.completions.create(
        model="gpt",
        messages=user("what time is it"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = response.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]


def test_tool_choice_none_answers_in_text(client):
    response = client.chat.completions.create(
        model="gpt", messages=user("just talk"), tools=TOOLS, tool_choice="none"
    )
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].message.content == "just talk"


def test_parallel_tool_calls(client):
    text = "weather and time in parallel"
    response = client.chat.completions.create(model="gpt", messages=user(text), tools=TOOLS)
    calls = response.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    for call in calls:
        assert json.loads(call.function.arguments) == {"text": text, "tool": call.function.name}
    single = client.chat.completions.create(
        model="gpt", messages=user(text), tools=TOOLS, parallel_tool_calls=False
    )
    assert len(single.choices[0].message.tool_calls) == 1


@pytest.mark.parametrize("text", ["weather in Paris", "weather and time in parallel"])
def test_streamed_tool_calls_reassemble_to_the_non_streamed_ones(client, text):
    plain = client.chat.completions.create(model="gpt", messages=user(text), tools=TOOLS)
    expected = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in plain.choices[0].message.tool_calls
    ]
    chunks = list(
        client.chat.completions.create(model="gpt", messages=user(text), tools=TOOLS, stream=True)
    )
    # The mock upstream splits arguments into 5-character pieces: many deltas per call.
    argument_deltas = sum(
        1
        for chunk in chunks
        for choice in chunk.choices
        for delta in choice.delta.tool_calls or []
        if delta.function and delta.function.arguments
    )
    assert argument_deltas > len(expected)
    calls, finish = reassemble_tool_calls(chunks)
    assert finish == "tool_calls"
    assert calls == expected
    for call in calls:
        json.loads(call["arguments"])


def test_tool_result_round_trip(client):
    messages = user("what is the weather in Paris")
    first = client.chat.completions.create(model="gpt", messages=messages, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    messages = messages + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ]
    second = client.chat.completions.create(model="gpt", messages=messages, tools=TOOLS)
    choice = second.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content == "tool result: sunny, 21C"


# ---------------------------------------------------------------------------- response_format, n


def test_json_object_response_format(client):
    text = "give me json"
    response = client.chat.completions.create(
        model="gpt", messages=user(text), response_format={"type": "json_object"}
    )
    assert json.loads(response.choices[0].message.content) == {"echo": text}


class Echo(BaseModel):
    echo: str


def test_structured_output_parse_with_json_schema(client):
    text = "structured please"
    # `parse` sends response_format {"type": "json_schema", ...} built from the model class.
    response = client.chat.completions.parse(model="gpt", messages=user(text), response_format=Echo)
    parsed = response.choices[0].message.parsed
    assert isinstance(parsed, Echo)
    assert parsed.echo == text


def test_n_choices(client):
    text = "say it twice"
    response = client.chat.completions.create(model="gpt", messages=user(text), n=2)
    assert [c.index for c in response.choices] == [0, 1]
    assert [c.message.content for c in response.choices] == [text, text]
    assert response.usage.completion_tokens == 2 * len(text.split())


def test_n_choices_streamed(client):
    text = "say it twice"
    chunks = list(
        client.chat.completions.create(model="gpt", messages=user(text), n=2, stream=True)
    )
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert texts == {0: text, 1: text}


# ---------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("model", ["embed", "mock"])
def test_embeddings_base64_default_equals_float(client, model):
    inputs = ["hello", "world"]
    # The SDK asks for base64 by default and decodes it to floats itself.
    default = client.embeddings.create(model=model, input=inputs)
    floats = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    for response in (default, floats):
        assert [d.index for d in response.data] == [0, 1]
        assert all(isinstance(x, float) for d in response.data for x in d.embedding)
        assert response.usage.prompt_tokens == 2
    # Embeddings are float32: base64 carries their exact bits, JSON their shortest decimal form,
    # so the two agree exactly once both are taken as float32.
    assert [as_f32(d.embedding) for d in default.data] == [as_f32(d.embedding) for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert len(default.data[0].embedding) > 0


def test_embeddings_single_input_is_deterministic(client):
    one = client.embeddings.create(model="embed", input="hello", encoding_format="float")
    two = client.embeddings.create(model="embed", input=["hello", "other"], encoding_format="float")
    assert len(one.data) == 1
    assert one.data[0].embedding == two.data[0].embedding
    assert one.model == "mock-embed"


# ---------------------------------------------------------------------------- errors


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    error = info.value
    assert error.status_code == 404
    assert error.body["code"] == "model_not_found"
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert "no-such-model" in error.message


def test_unknown_embedding_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="no-such-model", input="hi")
    assert info.value.code == "model_not_found"


def test_wrong_key_is_authentication_error(gateway):
    bad = OpenAI(base_url=gateway.base_url, api_key="sk-wrong-key")
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="gpt", messages=user("hi"))
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    # The key itself is never echoed back.
    assert "sk-wrong-key" not in json.dumps(info.value.body)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_wrong_field_type_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt", messages=user("hi"), temperature="hot")
    error = info.value
    assert error.status_code == 400
    assert error.code == "invalid_request"
    assert error.param == "temperature"
    assert "temperature" in error.message


# ---------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("model", "provider", "upstream_model"),
    [("gpt", "up", "mock-gpt"), ("mock", "builtin", "mock")],
)
def test_raw_response_shows_the_provider(client, model, provider, upstream_model):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=user("which provider")
    )
    assert raw.status_code == 200
    assert raw.headers["x-proxima-provider"] == provider
    assert raw.headers["x-proxima-model"] == upstream_model
    assert raw.headers["x-proxima-attempts"] == "1"
    assert raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content == "which provider"


def test_request_id_is_echoed(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=user("trace me"), extra_headers={"x-request-id": "e2e-req-42"}
    )
    assert raw.headers["x-request-id"] == "e2e-req-42"


def test_raw_streaming_response_has_headers(client):
    with client.chat.completions.with_streaming_response.create(
        model="gpt", messages=user("headers then stream"), stream=True
    ) as response:
        assert response.headers["x-proxima-provider"] == "up"
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "headers then stream"


# ---------------------------------------------------------------------------- async client


def test_async_client_streams(gateway):
    text = "async streaming works too"

    async def run() -> tuple[str, object]:
        async with AsyncOpenAI(base_url=gateway.base_url, api_key=gateway.master_key) as aclient:
            stream = await aclient.chat.completions.create(
                model="gpt",
                messages=user(text),
                stream=True,
                stream_options={"include_usage": True},
            )
            parts = []
            usage = None
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage is not None:
                    usage = chunk.usage
            return "".join(parts), usage

    content, usage = asyncio.run(run())
    assert content == text
    assert usage is not None and usage.completion_tokens == len(text.split())
