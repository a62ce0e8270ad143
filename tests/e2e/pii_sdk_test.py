"""PII masking through the official `openai` SDK, changed only in `base_url` and `api_key`:
with `[pii] mode = "mask"` the upstream (a separate mock-upstream process) sees placeholders
(the integration tests check what it received), and the answer streamed back in fragments that cut through them reaches the SDK with the caller's
own values.

This module runs its own gateway (conftest.py's topology with a `[pii]` section).
"""

from __future__ import annotations

import pytest
from openai import OpenAI

PII = """\
[pii]
mode = "mask"

"""

EMAIL = "ann.lee@example.com"
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def masked(start_gateway):
    with start_gateway("pii", PII) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(masked) -> OpenAI:
    return OpenAI(base_url=masked.base_url, api_key=masked.master_key, max_retries=0)


@pytest.mark.parametrize("model", ["gpt", "claude", "gem"])
@pytest.mark.parametrize("size", [1, 3, 5])
def test_a_streamed_answer_is_restored_across_fragments(client, model, size):
    text = f"Write to {EMAIL} and charge {CARD} please. mock-fragments: {size}"
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == text
    # Many small pieces: the placeholders upstream were cut, held back and released whole.
    assert len([p for p in pieces if p]) > 5


def test_a_whole_answer_is_restored_and_the_kinds_are_named(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": f"I am {EMAIL}, card {CARD}."}]
    )
    assert raw.headers["x-proxima-pii"] == "email,card"
    assert raw.parse().choices[0].message.content == f"I am {EMAIL}, card {CARD}."
