"""The adapter for the bundled demo site (see demosite.py for its DOM contract)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..errors import SiteError
from .base import TIMEOUT, SiteAdapter, cdp, decode_image, evaluate

# Mark the answers already on the page and focus an empty composer.
PREPARE_JS = """() => {
  for (const t of document.querySelectorAll('.turn.assistant')) t.dataset.tfSeen = '1';
  const box = document.querySelector('#prompt-textarea');
  if (!box) return 'no composer (#prompt-textarea)';
  box.focus();
  box.textContent = '';
  return '';
}"""

# Press send, wait for the new answer to settle, and read its image with the page's cookies.
SEND_AND_READ_JS = """async (timeoutMs) => {
  const box = document.querySelector('#prompt-textarea');
  const send = document.querySelector('button[data-testid="send-button"]');
  if (!send) return {error: 'no send button (button[data-testid="send-button"])', kind: 'selector'};
  send.click();
  if (box.innerText.trim() !== '') return {error: 'the prompt was not sent (composer not emptied)', kind: 'transient'};
  const fresh = () => document.querySelector('.turn.assistant:not([data-tf-seen])');
  const settled = () => { const t = fresh(); return t && t.dataset.state === 'done' ? t : null; };
  const turn = settled() || await new Promise((resolve) => {
    const obs = new MutationObserver(() => { const t = settled(); if (t) { obs.disconnect(); resolve(t); } });
    obs.observe(document.querySelector('#thread') || document.body, {subtree: true, childList: true, attributes: true});
    setTimeout(() => { obs.disconnect(); resolve(null); }, timeoutMs);
  });
  if (!turn) return {error: 'no answer within the deadline', kind: 'timeout'};
  const err = turn.querySelector('.error');
  if (err) return {error: err.innerText, kind: err.dataset.kind || ''};
  const img = turn.querySelector('img');
  if (!img) return {error: 'the answer holds no image', kind: 'transient'};
  const resp = await fetch(img.src, {credentials: 'include'});
  if (!resp.ok) return {error: 'image download failed: HTTP ' + resp.status, kind: 'transient'};
  const bytes = new Uint8Array(await resp.arrayBuffer());
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return {b64: btoa(bin)};
}"""


class DemoAdapter(SiteAdapter):
    name = "demo"

    async def open(self, page: Any, url: str, timeout: float) -> None:
        try:
            await asyncio.wait_for(page.goto(url, waitUntil="domcontentloaded"), timeout)
            await asyncio.wait_for(page.waitForSelector("#prompt-textarea"), timeout)
        except asyncio.TimeoutError:
            raise SiteError(f"the demo site did not load within {timeout:.0f} s", TIMEOUT) from None
        self.opened_url = url

    async def generate(self, page: Any, prompt: str, deadline: float, cdp_timeout: float) -> bytes:
        problem = await evaluate(page, PREPARE_JS, timeout=cdp_timeout)
        if problem:
            raise SiteError(problem, "selector")
        await cdp(page, "Input.insertText", {"text": prompt}, cdp_timeout)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SiteError("task deadline passed before sending", TIMEOUT)
        # The page gives up a little before us so that it can still say why.
        result = await evaluate(page, SEND_AND_READ_JS, int(remaining * 1000), timeout=remaining + 1)
        if "b64" in result:
            return decode_image(result)
        message, kind = result.get("error", "unknown error"), result.get("kind", "")
        if kind in ("timeout", "selector"):
            raise SiteError(message, TIMEOUT if kind == "timeout" else "permanent")
        cls, wait = self.classify(message)
        raise SiteError(message, cls, wait)
