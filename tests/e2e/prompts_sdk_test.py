"""Prompt templates as APIs, from Python: a prompt saved over the admin API is run at
`POST /v1/prompts/{name}/run` with the official `openai` SDK's own request method, and the
answer parses as the SDK's `ChatCompletion` — streamed, as `ChatCompletionChunk`s — because a
run answers exactly as chat completions do. A missing variable is the SDK's
`BadRequestError` naming it.
"""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI, Stream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

PROMPT = "e2e-translate"


@pytest.fixture(scope="module")
def prompt(gateway) -> dict:
    """Two versions of one prompt on model `gpt` (the mock upstream echoes the last user turn)."""
    gateway.admin("POST", "/admin/prompts", {
        "name": PROMPT, "model": "gpt", "template": "Translate: {{text}}",
    })
    return gateway.admin("POST", "/admin/prompts", {
        "name": PROMPT,
        "model": "gpt",
        "template": [
            {"role": "system", "content": "You translate into {{language}}."},
            {"role": "user", "content": "Translate into {{language}}: {{text}}"},
        ],
        "parameters": {"temperature": 0.1, "max_tokens": 64},
    })


def test_a_run_answers_as_a_chat_completion(client: OpenAI, prompt):
    assert prompt["version"] == 2
    completion = client.post(
        f"/prompts/{PROMPT}/run",
        cast_to=ChatCompletion,
        body={"variables": {"language": "Welsh", "text": "good {{morning}}"}},
    )
    assert isinstance(completion, ChatCompletion)
    assert completion.choices[0].message.content == "Translate into Welsh: good {{morning}}"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    first = client.post(
        f"/prompts/{PROMPT}/run",
        cast_to=ChatCompletion,
        body={"variables": {"text": "hello"}, "version": 1},
    )
    assert first.choices[0].message.content == "Translate: hello"


def test_a_streamed_run_parses_as_chat_completion_chunks(client: OpenAI, prompt):
    stream = client.post(
        f"/prompts/{PROMPT}/run",
        cast_to=ChatCompletion,
        body={"variables": {"language": "Irish", "text": "thank you"}, "stream": True},
        stream=True,
        stream_cls=Stream[ChatCompletionChunk],
    )
    chunks = list(stream)
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Translate into Irish: thank you"
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


def test_a_missing_variable_is_a_bad_request_naming_it(client: OpenAI, prompt):
    with pytest.raises(openai.BadRequestError) as refused:
        client.post(
            f"/prompts/{PROMPT}/run",
            cast_to=ChatCompletion,
            body={"variables": {"text": "hello"}},
        )
    assert refused.value.code == "invalid_request"
    assert refused.value.param == "variables"
    assert "`language`" in refused.value.message

    with pytest.raises(openai.NotFoundError):
        client.post("/prompts/e2e-no-such-prompt/run", cast_to=ChatCompletion, body={})
