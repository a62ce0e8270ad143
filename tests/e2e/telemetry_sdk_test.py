"""Trace context and metrics as SDK users and operators meet them: a W3C `traceparent` sent
through the official `openai` and `anthropic` SDKs (`default_headers`) is joined — the answer
carries the same trace id under the gateway's own span — and `GET /metrics` counts the calls
in Prometheus text. The session gateway of conftest.py exports no traces (no collector here),
which changes neither: context is passed on and echoed all the same.
"""

from __future__ import annotations

import re
import urllib.request

from anthropic import Anthropic
from openai import OpenAI

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{CALLER_SPAN}-01"
ECHO = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")


def joined(headers) -> str:
    """The gateway's span id, after checking the answer's traceparent joins the caller's trace."""
    match = ECHO.match(headers["traceparent"])
    assert match, headers["traceparent"]
    assert match.group(1) == TRACE
    assert match.group(2) != CALLER_SPAN
    return match.group(2)


def test_the_openai_sdk_callers_trace_is_joined_whole_and_streamed(gateway):
    client = OpenAI(
        base_url=gateway.base_url,
        api_key=gateway.master_key,
        max_retries=0,
        default_headers={"traceparent": TRACEPARENT},
    )
    raw = client.chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "trace this call"}]
    )
    first = joined(raw.headers)
    assert raw.parse().choices[0].message.content == "trace this call"
    with client.chat.completions.with_streaming_response.create(
        model="gpt", messages=[{"role": "user", "content": "and this stream"}], stream=True
    ) as response:
        second = joined(response.headers)
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
    assert text == "and this stream"
    # Each call is a span of its own in the caller's trace.
    assert first != second


def test_the_anthropic_sdk_callers_trace_is_joined(gateway):
    client = Anthropic(
        base_url=gateway.url,
        api_key=gateway.master_key,
        max_retries=0,
        default_headers={"traceparent": TRACEPARENT},
    )
    raw = client.messages.with_raw_response.create(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "trace the messages API"}],
    )
    joined(raw.headers)
    assert raw.parse().content[0].text == "trace the messages API"


def test_metrics_count_the_sdk_calls_in_prometheus_text(gateway):
    client = OpenAI(base_url=gateway.base_url, api_key=gateway.master_key, max_retries=0)

    def answered() -> float:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{gateway.url}/metrics", timeout=10) as response:
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        line = 'proxima_requests_total{model="gpt",provider="up",status="200",code=""} '
        values = [float(l[len(line) :]) for l in text.splitlines() if l.startswith(line)]
        return values[0] if values else 0.0

    before = answered()
    for text in ("one", "two", "three"):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": text}])
    assert answered() == before + 3
