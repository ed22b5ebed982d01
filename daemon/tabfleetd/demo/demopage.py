"""The demo site's pages: the chat (its DOM contract is what the demo profile drives) and the sign-in page."""

from __future__ import annotations

SIGNIN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - Demo Image Chat</title></head>
<body>
<h1>Sign in to Demo Image Chat</h1>
<form id="signin" method="post" action="/signin">
  <label>Account <input id="name" name="name" autocomplete="username" required></label>
  <input type="hidden" id="next" name="next">
  <button id="sign-in" type="submit">Sign in</button>
</form>
<script>
(() => {
  const next = new URLSearchParams(location.search).get("next") || "/";
  document.getElementById("next").value = next;
  const person = new URL(next, location.href).searchParams.get("person");
  if (person) {
    // A person at the window types their name and signs in.
    document.getElementById("name").value = person;
    setTimeout(() => document.getElementById("signin").submit(), 300);
  }
})();
</script>
</body>
</html>
"""

# The DOM contract (automation depends on these ids, classes and attributes):
#   #thread > .turn.user[data-role=user]             the prompt as text
#   #thread > .turn.assistant[data-role=assistant]   appended on send, holding
#       .loading[data-testid=image-gen-loading-state] until done, then either
#       img.result[alt="Generated image: PROMPT"] or p.error[data-kind], and
#       data-state="done" once the img has loaded or the error is shown
#   #prompt-textarea[contenteditable]                the composer
#   #send[data-testid=send-button] / #stop[data-testid=stop-button]
# Stop aborts the request and ends the turn with p.error[data-kind=stopped].
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Demo Image Chat</title>
<style>
  * { box-sizing: border-box; }
  [hidden] { display: none !important; }
  html, body { height: 100%; margin: 0; }
  body {
    display: flex; flex-direction: column;
    font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
    color: #0d0d0d; background: #fff;
  }
  header {
    padding: 12px 20px; font-size: 17px; font-weight: 600; color: #5d5d5d;
    border-bottom: 1px solid #ececec;
  }
  header span { color: #0d0d0d; }
  main { flex: 1; overflow-y: auto; }
  #thread {
    max-width: 760px; margin: 0 auto; padding: 24px 20px 8px;
    display: flex; flex-direction: column; gap: 18px;
  }
  .turn { max-width: 100%; }
  .turn.user {
    align-self: flex-end; max-width: 70%; padding: 10px 16px;
    background: #f4f4f4; border-radius: 18px; white-space: pre-wrap; overflow-wrap: anywhere;
  }
  .turn.assistant { align-self: flex-start; }
  .loading {
    width: 256px; height: 256px; border-radius: 14px; background: #f0f0f0;
    display: flex; align-items: center; justify-content: center;
    color: #8f8f8f; font-size: 14px; animation: pulse 1.6s ease-in-out infinite;
  }
  @keyframes pulse { 50% { opacity: .55; } }
  img.result {
    display: block; width: 256px; height: 256px; border-radius: 14px;
    image-rendering: pixelated; box-shadow: 0 1px 4px rgba(0,0,0,.12);
  }
  p.error {
    margin: 0; padding: 10px 14px; border: 1px solid #f3c1c1; border-radius: 12px;
    background: #fff5f5; color: #b42318; max-width: 520px;
  }
  p.error[data-kind="rate_limit"] { border-color: #f5d58a; background: #fffbeb; color: #8a5a00; }
  p.error[data-kind="stopped"] { border-color: #e3e3e3; background: #fafafa; color: #6b6b6b; }
  footer { padding: 8px 20px 20px; }
  .composer-box {
    max-width: 760px; margin: 0 auto; display: flex; align-items: flex-end; gap: 8px;
    padding: 10px 10px 10px 18px; border-radius: 26px; background: #f4f4f4;
    box-shadow: 0 0 0 1px #e5e5e5;
  }
  .composer {
    flex: 1; min-height: 24px; max-height: 200px; overflow-y: auto; padding: 6px 0;
    outline: none; white-space: pre-wrap; overflow-wrap: anywhere;
  }
  .composer:empty::before { content: attr(data-placeholder); color: #8f8f8f; }
  footer button {
    height: 36px; padding: 0 16px; border: 0; border-radius: 18px;
    font: inherit; font-weight: 600; cursor: pointer; color: #fff; background: #0d0d0d;
  }
  footer button:disabled { opacity: .3; cursor: default; }
  #stop { background: #fff; color: #0d0d0d; box-shadow: inset 0 0 0 1.5px #0d0d0d; }
  .hint { max-width: 760px; margin: 6px auto 0; text-align: center; font-size: 12px; color: #8f8f8f; }
</style>
</head>
<body>
<header>Demo <span>Image Chat</span></header>
<main id="scroller"><div id="thread"></div></main>
<footer>
  <div class="composer-box">
    <div id="prompt-textarea" contenteditable="true" class="composer" role="textbox"
         aria-multiline="true" data-placeholder="Describe an image"></div>
    <button id="send" data-testid="send-button" type="button">Send</button>
    <button id="stop" data-testid="stop-button" type="button" hidden disabled>Stop</button>
  </div>
  <div class="hint">A local stand-in for an image generator. Images are deterministic mosaics.</div>
</footer>
<script>
(() => {
  "use strict";
  // Long benchmark runs reuse one page; cap the DOM at 50 prompt/answer pairs.
  const MAX_TURNS = 100;
  const knobs = {};
  for (const [key, value] of new URLSearchParams(location.search)) knobs[key] = value;

  const scroller = document.getElementById("scroller");
  const thread = document.getElementById("thread");
  const composer = document.getElementById("prompt-textarea");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  let current = null;  // {turn, controller} while a generation runs

  function setBusy(busy) {
    sendButton.hidden = busy;
    sendButton.disabled = busy;
    stopButton.hidden = !busy;
    stopButton.disabled = !busy;
  }

  function turn(role) {
    const div = document.createElement("div");
    div.className = "turn " + role;
    div.dataset.role = role;
    return div;
  }

  function scrollDown() { scroller.scrollTop = scroller.scrollHeight; }

  function finish(assistant, node) {
    if (assistant.dataset.state === "done") return;
    const loading = assistant.querySelector(".loading");
    if (loading) loading.remove();
    assistant.appendChild(node);
    assistant.dataset.state = "done";
    if (current && current.turn === assistant) {
      current = null;
      setBusy(false);
    }
    scrollDown();
  }

  function showError(assistant, message, kind) {
    const p = document.createElement("p");
    p.className = "error";
    p.dataset.kind = kind;
    p.textContent = message;
    finish(assistant, p);
  }

  function showImage(assistant, prompt, src) {
    // Loaded detached, so the turn never holds both the spinner and the image.
    const img = new Image();
    img.className = "result";
    img.alt = "Generated image: " + prompt;
    img.onload = () => finish(assistant, img);
    img.onerror = () => showError(assistant, "The image could not be loaded.", "error");
    img.src = src;
  }

  async function send() {
    if (current) return;
    const prompt = composer.innerText.trim();
    if (!prompt) return;

    const user = turn("user");
    user.textContent = prompt;
    composer.textContent = "";
    const assistant = turn("assistant");
    const loading = document.createElement("div");
    loading.className = "loading";
    loading.dataset.testid = "image-gen-loading-state";
    loading.textContent = "Creating image\\u2026";
    assistant.appendChild(loading);
    thread.append(user, assistant);
    while (thread.children.length > MAX_TURNS) thread.firstElementChild.remove();
    scrollDown();

    const controller = new AbortController();
    current = {turn: assistant, controller};
    setBusy(true);

    let response, data = null;
    try {
      response = await fetch("/api/generate", {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({prompt, knobs}),
        signal: controller.signal,
      });
      data = await response.json().catch(() => null);
    } catch (err) {
      if (!controller.signal.aborted) {
        showError(assistant, "Network error. Check your connection and try again.", "error");
      }
      return;
    }
    if (controller.signal.aborted) return;
    if (data && data.lockup) {
      // A locked-up renderer: nothing on this page runs again.
      for (;;) {}
    }
    if (response.ok && data && typeof data.image === "string") {
      showImage(assistant, prompt, data.image);
    } else {
      const message = (data && data.error) || ("Request failed (HTTP " + response.status + ").");
      showError(assistant, message, (data && data.kind) || "error");
    }
  }

  sendButton.addEventListener("click", send);
  stopButton.addEventListener("click", () => {
    if (!current) return;
    const {turn: assistant, controller} = current;
    controller.abort();
    showError(assistant, "Image generation stopped.", "stopped");
  });
  composer.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  const check = parseFloat(knobs.challenge || "0");
  if (check > 0) {
    // A bot check like Cloudflare's: the title says so and the app is hidden until it passes.
    const footer = document.querySelector("footer");
    const title = document.title;
    document.title = "Just a moment...";
    footer.hidden = true;
    setTimeout(() => { document.title = title; footer.hidden = false; composer.focus(); }, check * 1000);
  }
  composer.focus();
})();
</script>
</body>
</html>
"""
