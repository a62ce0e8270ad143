"""End-to-end fixtures: a real `mock-upstream` and a real `proxima serve` in front of it.

The binaries come from `PROXIMA_BIN` and `MOCK_UPSTREAM_BIN`, else from
`${CARGO_TARGET_DIR:-target}/debug/`. `scripts/run-tests` builds them and sets both.

One gateway serves the whole session, with this topology:

    model "gpt"   -> provider "up"      (kind openai, the mock-upstream) -> model "mock-gpt"
    model "embed" -> provider "up"                                        -> model "mock-embed"
    model "mock"  -> provider "builtin" (kind mock, inside the gateway)   -> model "mock"
    model "claude" -> provider "claude-up" (kind anthropic, the mock-upstream) -> "claude-mock"
    model "gem"   -> provider "gemini-up" (kind gemini, the mock-upstream)  -> "gemini-mock"
    model "agent-anthropic" -> provider "claude-up" -> "claude-mock"  (the coding agents'
    model "agent-openai"    -> provider "up"        -> "mock-gpt"      models, agents_test.py)
    model "minilm" -> provider "minilm" (kind local, in-process all-MiniLM-L6-v2), the
                      `[context] embedding_model` of vector stores (when its weights exist)
    MCP server "up" -> the mock-upstream's `/mcp` (tools echo, add, fail), re-exposed at the
                      gateway's `/mcp` as up__echo, up__add, up__fail
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MASTER_KEY = "sk-proxima-e2e-master"
UPSTREAM_KEY = "sk-upstream"
# What the gateway sends the upstream MCP server as `authorization` (never the caller's key).
MCP_UPSTREAM_TOKEN = "Bearer sk-mcp-upstream"
STARTUP_TIMEOUT_S = 30.0

# Loopback only: never let a proxy from the environment see the readiness checks.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _binary(env_var: str, name: str) -> Path:
    explicit = os.environ.get(env_var)
    if explicit:
        path = Path(explicit)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
        if not target.is_absolute():
            target = REPO / target
        path = target / "debug" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} binary not found at {path}: build it with `cargo build --workspace`, "
            f"set {env_var}, or run scripts/run-tests",
            pytrace=False,
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _start_mock_upstream(binary: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """Starts mock-upstream on a free port; returns it and its `http://ADDR` from stdout."""
    proc = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        text=True,
    )
    first_line: list[str] = []
    reader = threading.Thread(
        target=lambda: first_line.append(proc.stdout.readline() if proc.stdout else ""),
        daemon=True,
    )
    reader.start()
    reader.join(STARTUP_TIMEOUT_S)
    line = first_line[0].strip() if first_line else ""
    prefix = "listening on "
    if not line.startswith(prefix):
        _stop(proc)
        pytest.fail(
            f"mock-upstream did not print '{prefix}http://ADDR' within {STARTUP_TIMEOUT_S}s "
            f"(got {line!r}); its stderr:\n{_tail(log)}",
            pytrace=False,
        )
    return proc, line[len(prefix) :].rstrip("/")


def _config(port: int, upstream: str, extra: str = "") -> str:
    return extra + f"""\
[server]
listen = "127.0.0.1:{port}"
master_key = "{MASTER_KEY}"

[providers.up]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "{UPSTREAM_KEY}"

[providers.builtin]
kind = "mock"

[models.gpt]
targets = [{{ provider = "up", model = "mock-gpt" }}]

[models.mock]
targets = [{{ provider = "builtin", model = "mock" }}]

[models.embed]
targets = [{{ provider = "up", model = "mock-embed" }}]

[providers.claude-up]
kind = "anthropic"
base_url = "{upstream}/v1"
api_key = "{UPSTREAM_KEY}"

[providers.gemini-up]
kind = "gemini"
base_url = "{upstream}/v1beta"
api_key = "{UPSTREAM_KEY}"

[models.claude]
targets = [{{ provider = "claude-up", model = "claude-mock" }}]

[models.gem]
targets = [{{ provider = "gemini-up", model = "gemini-mock" }}]

[models.agent-anthropic]
targets = [{{ provider = "claude-up", model = "claude-mock" }}]

[models.agent-openai]
targets = [{{ provider = "up", model = "mock-gpt" }}]

[mcp.servers.up]
url = "{upstream}/mcp"
headers = {{ authorization = "{MCP_UPSTREAM_TOKEN}" }}
{_embedder()}"""


def _embedder() -> str:
    """The built-in local MiniLM as model "minilm", embedding vector stores, when its weights are
    at `PROXIMA_MINILM_DIR` (scripts/fetch-minilm; scripts/run-tests sets the variable). Without
    them, stores are searched by words only; under CI=true that is an error."""
    folder = Path(os.environ.get("PROXIMA_MINILM_DIR", REPO / "models/all-minilm-l6-v2"))
    if not (folder / "model.safetensors").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"all-MiniLM-L6-v2 is not at {folder}: run scripts/fetch-minilm", pytrace=False)
        return ""
    return f"""
[providers.minilm]
kind = "local"
path = "{folder}"

[models.minilm]
targets = [{{ provider = "minilm", model = "all-minilm-l6-v2" }}]

[context]
embedding_model = "minilm"
"""


def _ready(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _start_proxima(
    binary: Path, workdir: Path, upstream: str, extra: str = ""
) -> tuple[subprocess.Popen, str, Path]:
    """Starts `proxima serve` on a free port, waits for `/health/ready`; retries on a port race."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROXIMA_CONFIG", "PROXIMA_MASTER_KEY")}
    env.setdefault("PROXIMA_LOG", "info")
    env["NO_COLOR"] = "1"
    failures = []
    for attempt in range(3):
        port = _free_port()
        config = workdir / f"proxima-{attempt}.toml"
        config.write_text(_config(port, upstream, extra))
        log = workdir / f"proxima-{attempt}.log"
        proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(config)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(f"{base}/health/ready"):
                return proc, base, log
            time.sleep(0.05)
        _stop(proc)
        failures.append(
            f"attempt {attempt + 1} on port {port} (exit {proc.returncode}):\n{_tail(log)}"
        )
    pytest.fail(
        "proxima did not become ready (GET /health/ready = 200):\n" + "\n\n".join(failures),
        pytrace=False,
    )


@dataclass(frozen=True)
class Gateway:
    """A running gateway: `base_url` is what SDKs take (ends in `/v1`)."""

    url: str
    base_url: str
    master_key: str
    upstream_url: str
    log: Path

    def admin_status(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """An admin API call with the master key: its status and JSON answer (an error status
        raises `urllib.error.HTTPError`)."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.master_key}",
                "Content-Type": "application/json",
            },
        )
        # Loopback only: never let a proxy from the environment see admin calls.
        with _NO_PROXY.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        """An admin API call with the master key: its JSON answer."""
        return self.admin_status(method, path, body)[1]


_LOGS: list[Path] = []


@contextlib.contextmanager
def running_gateway(tmp_path_factory: pytest.TempPathFactory, name: str, extra: str = ""):
    """A mock-upstream and a gateway in front of it with the topology above; `extra` is
    config text put before it (top-level sections such as `[cache]`)."""
    proxima_bin = _binary("PROXIMA_BIN", "proxima")
    mock_bin = _binary("MOCK_UPSTREAM_BIN", "mock-upstream")
    workdir = tmp_path_factory.mktemp(name)
    mock_log = workdir / "mock-upstream.log"
    mock, upstream = _start_mock_upstream(mock_bin, mock_log)
    try:
        proxima, url, log = _start_proxima(proxima_bin, workdir, upstream, extra)
    except BaseException:
        _stop(mock)
        raise
    _LOGS.extend([log, mock_log])
    try:
        yield Gateway(
            url=url,
            base_url=f"{url}/v1",
            master_key=MASTER_KEY,
            upstream_url=upstream,
            log=log,
        )
    finally:
        _stop(proxima)
        _stop(mock)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    with running_gateway(tmp_path_factory, "gateway") as gateway:
        yield gateway


@pytest.fixture(scope="session")
def start_gateway(tmp_path_factory: pytest.TempPathFactory):
    """For a suite that needs a gateway of its own (other config, e.g. `[cache]`):
    `with start_gateway(name, extra) as gateway: ...`."""
    return lambda name, extra="": running_gateway(tmp_path_factory, name, extra)


@pytest.fixture(scope="module")
def client(gateway):
    """The `openai` SDK on the gateway with the master key; a test module may define its own."""
    from openai import OpenAI

    return OpenAI(base_url=gateway.base_url, api_key=gateway.master_key, max_retries=0)


@pytest.fixture(scope="module")
def claude_client(gateway):
    """The `anthropic` SDK on the gateway with the master key (it appends /v1/messages itself,
    so its base URL is the gateway's root)."""
    from anthropic import Anthropic

    return Anthropic(base_url=gateway.url, api_key=gateway.master_key, max_retries=0)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """On failure, show where the servers' logs are and the end of the gateway's."""
    if exitstatus == 0 or not _LOGS:
        return
    terminalreporter.section("e2e server logs")
    for path in _LOGS:
        terminalreporter.write_line(f"{path}:")
        terminalreporter.write_line(_tail(path, 30))
