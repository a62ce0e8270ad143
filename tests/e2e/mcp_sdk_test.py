"""The official MCP Python SDK (`mcp` on PyPI: `streamable_http_client` + `ClientSession`)
against the gateway's `/mcp`, with gateway keys: it initializes, lists the gateway's own tools
and the mock-upstream MCP server's (as `up__TOOL`), calls both kinds, and sees the caller's
`mcp_tools` and tenant walls hold.
"""

from __future__ import annotations

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def _session(gateway, key: str, work):
    """Runs `work(session)` in an initialized MCP session on the gateway with `key`."""

    async def run():
        # trust_env=False: loopback only, whatever proxy the environment names.
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {key}"}, trust_env=False, timeout=30
        )
        async with http, streamable_http_client(f"{gateway.url}/mcp", http_client=http) as (
            read,
            write,
        ):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.server_info.name == "proxima"
                return await work(session)

    return anyio.run(run)


def _names(listing) -> list[str]:
    return [tool.name for tool in listing.tools]


def test_the_sdk_lists_and_calls_own_and_upstream_tools(gateway):
    async def work(session: ClientSession):
        names = _names(await session.list_tools())
        assert names[:2] == ["vector_store_search", "conversation_items"]
        assert {"up__echo", "up__add", "up__fail"} <= set(names)

        echoed = await session.call_tool("up__echo", {"text": "hello through the gateway"})
        assert not echoed.is_error
        assert echoed.content[0].text == "hello through the gateway"
        added = await session.call_tool("up__add", {"a": 2, "b": 3})
        assert added.structured_content == {"sum": 5.0}
        failed = await session.call_tool("up__fail", {})
        assert failed.is_error

        with pytest.raises(MCPError) as unknown:
            await session.call_tool("up__missing", {})
        assert unknown.value.error.code == -32602
        await session.send_ping()

    _session(gateway, gateway.master_key, work)


def test_own_tools_read_only_the_callers_conversations(gateway, client):
    # The master key's conversation, made with the openai SDK.
    conversation = client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "What is the capital of Peru?"},
            {"type": "message", "role": "assistant", "content": "Lima."},
        ]
    )

    async def read(session: ClientSession):
        return await session.call_tool(
            "conversation_items", {"conversation_id": conversation.id, "limit": 10}
        )

    mine = _session(gateway, gateway.master_key, read)
    assert not mine.is_error
    texts = [item["content"][0]["text"] for item in mine.structured_content["data"]]
    assert texts == ["What is the capital of Peru?", "Lima."]

    # Another team's key: the conversation does not exist for it.
    other = gateway.admin("POST", "/admin/keys", {"name": "mcp-other", "team": "elsewhere"})
    theirs = _session(gateway, other["key"], read)
    assert theirs.is_error
    assert "no conversation" in theirs.content[0].text
    assert "Lima" not in theirs.content[0].text


def test_mcp_tools_globs_hide_and_refuse_tools(gateway):
    limited = gateway.admin("POST", "/admin/keys", {"name": "mcp-limited", "mcp_tools": ["up__*"]})
    assert limited["mcp_tools"] == ["up__*"]

    async def work(session: ClientSession):
        names = _names(await session.list_tools())
        assert names == ["up__echo", "up__add", "up__fail"]
        with pytest.raises(MCPError) as hidden:
            await session.call_tool("vector_store_search", {"vector_store_id": "vs_x", "query": "q"})
        assert hidden.value.error.code == -32602
        assert "Unknown tool" in hidden.value.error.message
        return (await session.call_tool("up__echo", {"text": "allowed"})).content[0].text

    assert _session(gateway, limited["key"], work) == "allowed"


def test_the_tool_calls_are_in_the_call_log(gateway):
    # Other tests call the tool too, some with other keys: this call's row is the master key's
    # one more.
    def masters():
        rows = gateway.admin("GET", "/admin/logs?model=mcp:up__echo&limit=1000")["data"]
        return [row for row in rows if row["key_name"] == "master"]

    before = len(masters())

    async def work(session: ClientSession):
        await session.call_tool("up__echo", {"text": "for the log"})

    _session(gateway, gateway.master_key, work)
    rows = []
    for _ in range(100):
        rows = masters()
        if len(rows) > before:
            break
        anyio.run(anyio.sleep, 0.05)
    assert len(rows) == before + 1, "no ledger row for the tool call"
    assert rows[0]["provider"] == "up"
    assert rows[0]["upstream_model"] == "echo"
    assert rows[0]["status"] == 200


def test_without_a_key_the_sdk_cannot_connect(gateway):
    async def run():
        http = httpx2.AsyncClient(trust_env=False, timeout=10)
        async with http, streamable_http_client(f"{gateway.url}/mcp", http_client=http) as (
            read,
            write,
        ):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(10):
                    await session.initialize()

    # The gateway's message reaches the client's error: it says what to send.
    with pytest.raises(BaseException) as refused:
        anyio.run(run)
    errors = [refused.value]
    while isinstance(errors[-1], BaseExceptionGroup):
        errors.append(errors[-1].exceptions[0])
    assert isinstance(errors[-1], MCPError), repr(refused.value)
    assert "no API key" in errors[-1].error.message
