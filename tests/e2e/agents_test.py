"""Real coding agents through a real `proxima serve`: Claude Code (`claude -p`) on
`/v1/messages` and Codex (`codex exec`) on `/v1/responses`, each in front of an Anthropic-kind
backend (model `agent-anthropic`) and an OpenAI-kind one (`agent-openai`), both the
`mock-upstream` (see conftest.py). Offline: the agents talk only to the gateway.

The mock answers as the prompt tells it: `mock-no-tools` asks for a text answer (an echo of the
user's turn) although the agent offers tools; `mock-call: NAME {json}` asks for that tool call,
which the agent runs, sending the result back; the mock then answers `tool result: ...` with
the result it received. So a secret written in a file only the tool reads, showing up in the
agent's final answer, went agent -> gateway -> upstream and back.

The agents come from `CLAUDE_BIN` / `CODEX_BIN`, else from PATH (`scripts/run-tests` installs
them with npm). Without one, its tests are skipped locally and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

BACKENDS = ["agent-anthropic", "agent-openai"]
# Under load (CI builds beside it) an agent takes a while to start.
AGENT_TIMEOUT_S = 300
# Variables of the machine's own agents and SDKs that must not reach the ones under test.
FOREIGN_ENV_PREFIXES = ("ANTHROPIC_", "OPENAI_", "CLAUDE", "CODEX_")


def _agent(env_var: str, name: str) -> str:
    path = os.environ.get(env_var) or shutil.which(name)
    if path and os.access(path, os.X_OK):
        return path
    reason = (
        f"`{name}` not found (set {env_var} or put it on PATH; scripts/run-tests installs it "
        f"with npm when npm is present)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(FOREIGN_ENV_PREFIXES) and k not in ("HOME", "XDG_CONFIG_HOME")
    }
    env.update(HOME=str(home), NO_COLOR="1", **extra)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=AGENT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{argv[0]} did not finish in {AGENT_TIMEOUT_S}s: {e.stdout!r} {e.stderr!r}")
    assert done.returncode == 0, (
        f"{' '.join(argv[:3])}... exit {done.returncode}\n"
        f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    )
    return done


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A project folder with a file only a tool call can read, and an empty HOME beside it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("The secret word is PLUM-4711.\n")
    (tmp_path / "home").mkdir()
    return project


# ------------------------------------------------------------------ Claude Code


def claude(gateway, workdir: Path, model: str, prompt: str, *flags: str) -> str:
    binary = _agent("CLAUDE_BIN", "claude")
    env = _env(
        workdir.parent / "home",
        ANTHROPIC_BASE_URL=gateway.url,
        ANTHROPIC_API_KEY=gateway.master_key,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        # Whatever small model it picks for side tasks is served too.
        ANTHROPIC_SMALL_FAST_MODEL=model,
        ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
    )
    # As root, --dangerously-skip-permissions is refused; --allowedTools grants what is needed.
    argv = [binary, "-p", prompt, "--model", model, *flags]
    return _run(argv, workdir, env).stdout


@pytest.mark.parametrize("model", BACKENDS)
def test_claude_code_answers(gateway, workdir, model):
    # With every built-in tool offered, Claude Code sends its environment as a system turn
    # after the user's: the gateway must take it (it answered 400 before).
    out = claude(gateway, workdir, model, "Say hello back. mock-no-tools PING-CLAUDE")
    assert "PING-CLAUDE" in out, out


@pytest.mark.parametrize("model", BACKENDS)
def test_claude_code_runs_a_tool(gateway, workdir, model):
    call = json.dumps({"file_path": str(workdir / "notes.txt")})
    out = claude(
        gateway,
        workdir,
        model,
        f"What is the secret word in notes.txt? mock-call: Read {call}",
        "--tools",
        "Read",
        "--allowedTools",
        "Read",
    )
    # The mock quotes the tool_result it received: the file's text went there and back.
    assert "tool result:" in out, out
    assert "PLUM-4711" in out, out


# ------------------------------------------------------------------ Codex


def codex(gateway, workdir: Path, model: str, prompt: str) -> str:
    binary = _agent("CODEX_BIN", "codex")
    codex_home = workdir.parent / "codex-home"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(
        f"""\
model_provider = "proxima"

[model_providers.proxima]
name = "Proxima"
base_url = "{gateway.base_url}"
wire_api = "responses"
env_key = "PROXIMA_API_KEY"
"""
    )
    env = _env(
        workdir.parent / "home",
        CODEX_HOME=str(codex_home),
        PROXIMA_API_KEY=gateway.master_key,
    )
    argv = [
        binary,
        "exec",
        "--skip-git-repo-check",
        # Containers rarely allow the sandbox's namespaces; the test's folder is disposable.
        "--dangerously-bypass-approvals-and-sandbox",
        "--model",
        model,
        prompt,
    ]
    return _run(argv, workdir, env).stdout


@pytest.mark.parametrize("model", BACKENDS)
def test_codex_answers(gateway, workdir, model):
    out = codex(gateway, workdir, model, "Say hello back. mock-no-tools PING-CODEX")
    assert "PING-CODEX" in out, out


@pytest.mark.parametrize("model", BACKENDS)
def test_codex_runs_a_shell_command(gateway, workdir, model):
    call = json.dumps({"cmd": "cat notes.txt"})
    out = codex(gateway, workdir, model, f"Show notes.txt. mock-call: exec_command {call}")
    assert "tool result:" in out, out
    assert "PLUM-4711" in out, out
