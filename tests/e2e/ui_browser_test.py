"""The admin web UI in a real browser: Playwright driving Debian's `chromium` package
(`PROXIMA_CHROMIUM`, default /usr/bin/chromium; Playwright's own browser download is not
used). Signs in with the master key, opens every page without a console or script error,
makes a key in the UI and uses it with the `openai` SDK, finds that request in the logs,
chats in the playground with the streamed answer of the built-in `mock` model, saves a prompt
template in the UI and runs it with its try-it form, and finds an MCP tool call (made with the
official `mcp` SDK) on the MCP page beside the mock-upstream's MCP server and its tools.

A screenshot of each page is saved to `$PROXIMA_ARTIFACTS` (default `target/ui-screenshots`)
for CI to keep; the test prints where.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from openai import OpenAI
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PROXIMA_CHROMIUM", "/usr/bin/chromium")
PAGES = [
    "dashboard",
    "models",
    "keys",
    "teams",
    "logs",
    "audit",
    "conversations",
    "vector-stores",
    "prompts",
    "mcp",
    "playground",
]


def _screenshot_dir() -> Path:
    folder = Path(os.environ.get("PROXIMA_ARTIFACTS") or REPO / "target/ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium", pytrace=False)
    with sync_playwright() as playwright:
        # No sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Page:
    """A browser tab that records console errors and uncaught script errors, and saves
    screenshots."""

    def __init__(self, browser, base: str, shots: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.base = base
        self.shots = shots
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"script: {e}"))

    def open(self, path: str):
        response = self.page.goto(self.base + path)
        assert response is not None and response.ok, f"{path}: {response and response.status}"
        self.page.wait_for_load_state("networkidle")
        return response

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def assert_clean(self, where: str) -> None:
        assert not self.errors, f"{where}: {self.errors}"


def test_the_admin_ui_in_a_browser(gateway, browser, capsys):
    shots = _screenshot_dir()
    with capsys.disabled():
        print(f"\nadmin UI screenshots: {shots}")
    tab = Page(browser, gateway.url, shots)
    page = tab.page

    # Without a session, /ui leads to the sign-in form; a wrong key is refused there.
    tab.open("/ui")
    assert page.url.endswith("/ui/sign-in")
    page.fill("#key", "sk-not-a-key")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text(".banner.error")
    tab.shot("sign-in")
    # That refusal is a 401 document, which Chromium reports on the console; nothing else may.
    tab.errors.clear()
    page.fill("#key", gateway.master_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/dashboard")
    assert page.title().startswith("Dashboard")

    for name in PAGES:
        tab.open(f"/ui/{name}")
        assert page.locator("nav a.active").inner_text().lower().startswith(name[:4])
        tab.shot(name)
        tab.assert_clean(name)

    # A key made in the UI: its secret is shown once, with a copy button, and works.
    tab.open("/ui/keys")
    page.fill("input[name=name]", "browser-key")
    # The models it may use: the chat models it calls, and the embedding model its vector store
    # is ingested with, when the gateway has one.
    served = {m.id for m in OpenAI(base_url=gateway.base_url, api_key=gateway.master_key).models.list()}
    page.fill("input[name=models]", ", ".join(m for m in ["mock", "gpt", "minilm"] if m in served))
    page.fill("input[name=rpm]", "600")
    page.click("form[action='/ui/keys'] button[type=submit]")
    secret = page.inner_text("#new-secret").strip()
    assert secret.startswith("sk-px-")
    page.click("button[data-copy=new-secret]")
    tab.shot("key-created")
    tab.assert_clean("key creation")

    client = OpenAI(base_url=gateway.base_url, api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="mock", messages=[{"role": "user", "content": "hello from the browser test"}]
    )
    request_id = raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content

    # The request shows in the logs (rows are written in batches: reload until it is there),
    # and its detail page opens from there.
    key_id = page.locator("table tbody tr", has_text="browser-key").locator("a").first.get_attribute("href")
    key_id = key_id.rsplit("/", 1)[-1]
    tab.open(f"/ui/keys/{key_id}")
    assert page.input_value("input[name=rpm]") == "600"
    tab.shot("key-edit")
    deadline = time.monotonic() + 15
    while True:
        tab.open(f"/ui/logs?key={key_id}")
        link = page.locator(f"a[href='/ui/logs/{request_id}']")
        if link.count() or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert link.count() == 1, page.content()
    tab.shot("logs-with-request")
    link.click()
    page.wait_for_url(f"**/ui/logs/{request_id}")
    detail = page.inner_text("main")
    assert "browser-key" in detail and "Attempts" in detail
    tab.shot("log-detail")
    tab.assert_clean("logs")

    # The key's conversation and vector store are browsed, and the store searched, in the UI.
    client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "remember the tulips"}]
    )
    uploaded = client.files.create(
        file=("facts.txt", b"The launch code is PINEAPPLE-42."), purpose="assistants"
    )
    store = client.vector_stores.create(name="launch facts", file_ids=[uploaded.id])
    deadline = time.monotonic() + 30
    while client.vector_stores.retrieve(store.id).file_counts.in_progress:
        assert time.monotonic() < deadline, "the file was not ingested"
        time.sleep(0.2)
    tab.open(f"/ui/conversations?tenant=key:{key_id}")
    page.locator("table tbody a").first.click()
    page.wait_for_load_state("networkidle")
    assert "remember the tulips" in page.inner_text("main")
    tab.shot("conversation")
    tab.open(f"/ui/vector-stores?tenant=key:{key_id}")
    assert "launch facts" in page.inner_text("main")
    page.locator(f"a[href*='{store.id}']").click()
    page.fill("input[name=q]", "launch code")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "PINEAPPLE-42" in page.inner_text("main")
    tab.shot("vector-store-search")
    tab.assert_clean("conversations and vector stores")

    # The playground streams an answer from the built-in mock model.
    tab.open("/ui/playground")
    page.select_option("#pg-model", "mock")
    page.fill("#pg-message", "stream me a reply")
    page.click("#pg-send")
    answer = page.locator(".turn.assistant")
    answer.wait_for()
    page.wait_for_function(
        "document.querySelector('#pg-status').textContent.includes('ms')", timeout=15000
    )
    assert answer.inner_text().strip(), page.content()
    assert not page.locator(".turn.error").count()
    tab.shot("playground-answered")
    tab.assert_clean("playground")

    # A prompt saved in the UI, then run with its try-it form: the answer streams in.
    tab.open("/ui/prompts")
    form = page.locator("form[action='/ui/prompts']")
    form.locator("input[name=name]").fill("browser-greeting")
    form.locator("select[name=model]").select_option("mock")
    form.locator("textarea[name=template]").fill("Greet {{who}} and mention {{topic}}.")
    form.locator("textarea[name=parameters]").fill('{"max_tokens": 50}')
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/ui/prompts/browser-greeting")
    assert "Version 1" in page.inner_text("main")
    tab.shot("prompt")
    page.fill("textarea[data-variable=who]", "Ada")
    page.fill("textarea[data-variable=topic]", "engines")
    page.click("#pr-send")
    page.wait_for_function(
        "document.querySelector('#pr-status').textContent.includes('ms')", timeout=15000
    )
    assert page.inner_text("#pr-answer").strip(), page.content()
    assert not page.locator(".turn.error").count()
    tab.shot("prompt-tried")
    tab.assert_clean("prompts")

    # An MCP tool call with the official SDK shows on the MCP page, with the upstream server
    # reachable and its tools listed.
    # In a thread of its own: Playwright's sync API holds this thread's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, _call_mcp_tool, gateway.url, secret).result()
    deadline = time.monotonic() + 15
    while True:
        tab.open("/ui/mcp")
        main = page.inner_text("main")
        if "browser-key" in main or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "browser-key" in main, main
    assert "up__echo" in main and "vector_store_search" in main
    assert page.locator("span.pill", has_text="reachable").count() >= 1
    tab.shot("mcp-with-call")
    tab.assert_clean("mcp")

    # The dashboard now draws those requests (once the ledger has written the last one).
    deadline = time.monotonic() + 15
    while True:
        tab.open("/ui/dashboard?window=1h")
        requests = page.locator(".stat", has_text="requests").locator(".value").inner_text()
        if int(requests) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert int(requests) >= 2
    assert page.locator("figure.chart svg").count() == 5
    assert page.locator("figure.chart rect").count() >= 1
    tab.shot("dashboard-with-traffic")
    tab.assert_clean("dashboard")

    # Signing out ends the session.
    page.click(".signout button")
    page.wait_for_url("**/ui/sign-in")
    tab.open("/ui/keys")
    assert page.url.endswith("/ui/sign-in")
    tab.context.close()
    assert re.search(r"\.png$", next(shots.iterdir()).name)


async def _call_mcp_tool(url: str, key: str) -> None:
    # trust_env=False: loopback only, whatever proxy the environment names.
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, trust_env=False, timeout=30)
    async with http, streamable_http_client(f"{url}/mcp", http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("up__echo", {"text": "from the browser test"})
            assert not result.is_error
