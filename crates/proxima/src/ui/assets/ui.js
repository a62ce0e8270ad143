// The admin UI's one script: copy buttons, confirmations, and the streamed answers of the
// playground and of a prompt's try-it form. Pages work without it, except those two.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(source.textContent).then(done, () => selectText(source));
  } else {
    selectText(source);
    try { document.execCommand("copy"); done(); } catch (_) { /* selected: the user copies */ }
  }
});

function selectText(node) {
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// The playground: the conversation so far is kept here and sent whole with each message.
(function playground() {
  const form = document.getElementById("playground");
  if (!form) return;
  const transcript = document.getElementById("pg-transcript");
  const status = document.getElementById("pg-status");
  const send = document.getElementById("pg-send");
  const input = document.getElementById("pg-message");
  let history = [];

  const turn = (role, text) => {
    const node = document.createElement("div");
    node.className = "turn " + role;
    node.textContent = text;
    transcript.appendChild(node);
    return node;
  };

  document.getElementById("pg-clear").addEventListener("click", () => {
    history = [];
    transcript.textContent = "";
    status.textContent = "";
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    const system = document.getElementById("pg-system").value.trim();
    history.push({ role: "user", content: text });
    turn("user", text);
    input.value = "";
    const messages = system ? [{ role: "system", content: system }, ...history] : history.slice();
    const body = {
      model: document.getElementById("pg-model").value,
      messages,
      stream: true,
      temperature: Number(document.getElementById("pg-temperature").value),
    };
    const answer = turn("assistant", "");
    send.disabled = true;
    status.textContent = "…";
    const started = performance.now();
    try {
      const response = await streamChat("/ui/playground/chat", body, (delta) => { answer.textContent += delta; });
      history.push({ role: "assistant", content: answer.textContent });
      const model = response.headers.get("x-proxima-model") || body.model;
      status.textContent = model + " · " + Math.round(performance.now() - started) + " ms";
    } catch (error) {
      answer.className = "turn error";
      answer.textContent = String(error.message || error);
      history.pop();
      status.textContent = "";
    } finally {
      send.disabled = false;
    }
  });
})();

// A prompt's try-it form: its variables run the prompt, the answer streamed.
(function promptRun() {
  const form = document.getElementById("prompt-run");
  if (!form) return;
  const answer = document.getElementById("pr-answer");
  const status = document.getElementById("pr-status");
  const send = document.getElementById("pr-send");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const variables = {};
    for (const field of form.querySelectorAll("[data-variable]")) variables[field.dataset.variable] = field.value;
    const body = { variables, stream: true, version: Number(document.getElementById("pr-version").value) };
    answer.className = "turn assistant";
    answer.textContent = "";
    send.disabled = true;
    status.textContent = "…";
    const started = performance.now();
    try {
      const response = await streamChat(form.dataset.action, body, (delta) => { answer.textContent += delta; });
      const model = response.headers.get("x-proxima-model") || "";
      status.textContent = model + " · " + Math.round(performance.now() - started) + " ms";
    } catch (error) {
      answer.className = "turn error";
      answer.textContent = String(error.message || error);
      status.textContent = "";
    } finally {
      send.disabled = false;
    }
  });
})();

// POSTs `body` as JSON with the page's CSRF token and reads the streamed chat completion,
// calling `onDelta` with each piece of text; a refusal throws its error's message.
async function streamChat(url, body, onDelta) {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (_) { /* keep the status */ }
    throw new Error(message);
  }
  await readStream(response, onDelta);
  return response;
}

// Reads a chat completion stream (server-sent events), calling `onDelta` with each piece of
// text; an error event ends it with that error.
async function readStream(response, onDelta) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) onDelta(delta.content);
      }
    }
  }
}
