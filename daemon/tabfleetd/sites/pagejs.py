"""The scripts a ProfileAdapter runs inside the page; each is one CDP round trip.

Every script takes the page config built by ``profile.page_config`` as its
first argument. Waiting happens inside the page (a MutationObserver, capture
of load events, and a 200 ms timer for the time-based rules), so one prompt
costs three round trips however long the site takes: PREPARE, Input.insertText
and SEND (which also downloads the image).
"""

from __future__ import annotations

# Shared helpers, pasted into each script (a page keeps nothing of ours between prompts
# except window.__tabfleet, the baseline PREPARE records).
HELPERS = r"""
const tf = {};
tf.visible = (el) => !!el && el.isConnected && el.getClientRects().length > 0;
tf.all = (sel, root) => {
  if (!sel) return [];
  try { return Array.from((root || document).querySelectorAll(sel)); }
  catch (e) { throw new Error('bad CSS selector ' + JSON.stringify(sel) + ' (' + e.message + ')'); }
};
tf.first = (sels, enabled) => {
  for (const s of sels) for (const el of tf.all(s)) {
    if (!tf.visible(el)) continue;
    if (enabled && (el.disabled || el.getAttribute('aria-disabled') === 'true')) continue;
    return el;
  }
  return null;
};
tf.text = (el) => !el ? '' : (el.tagName === 'TEXTAREA' || el.tagName === 'INPUT') ? el.value : (el.innerText || '');
tf.norm = (s) => String(s).replace(/\s+/g, ' ').trim();
tf.re = (p, g) => new RegExp(p, g ? 'gi' : 'i');
tf.until = (fn, ms) => new Promise((resolve, reject) => {
  let done = false, obs = null, tick = null, timer = null;
  const end = () => { done = true; if (obs) obs.disconnect(); clearInterval(tick); clearTimeout(timer); };
  const check = () => {
    if (done) return;
    try { const v = fn(); if (v) { end(); resolve(v); } } catch (e) { end(); reject(e); }
  };
  check();
  if (done) return;
  obs = new MutationObserver(check);
  obs.observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
  tick = setInterval(check, 100);
  timer = setTimeout(() => { if (!done) { end(); resolve(null); } }, Math.max(0, ms));
});
tf.scope = (cfg) => cfg.result.scope ? document.querySelector(cfg.result.scope) : document.body;
tf.key = (cfg, src) => {
  if (!cfg.result.dedupe) return src;
  const m = src.match(tf.re(cfg.result.dedupe));
  return m ? (m[1] !== undefined ? m[1] : m[0]) : src;
};
tf.images = (cfg) => {
  const scope = tf.scope(cfg);
  if (!scope) return [];
  const found = new Map();
  for (const el of tf.all(cfg.result.selector, scope)) {
    const src = el.currentSrc || el.src || '';
    if (!src) continue;
    const done = !!el.complete && el.naturalWidth > 0;
    const min = cfg.result.min_px;
    if (done && min && (el.naturalWidth < min || el.naturalHeight < min)) continue;
    const key = tf.key(cfg, src);
    const seen = found.get(key);
    if (!seen || (done && !seen.done)) found.set(key, {key, src, done, el});
  }
  return [...found.values()];
};
tf.busy = (cfg) => cfg.busy.selectors.some((s) => tf.all(s).some(tf.visible));
tf.answers = (cfg, st) => cfg.result.answer ? tf.all(cfg.result.answer).filter((a) => !st.oldAnswers.has(a)) : [];
tf.pageText = (prompt) => {
  const text = document.body ? document.body.innerText : '';
  return prompt ? text.split(prompt).join(' ') : text;  // the prompt's own echo never counts
};
tf.count = (text, pattern) => (text.match(tf.re(pattern, true)) || []).length;
tf.found = (m, i, text, last) => {
  let match = null;
  if (last) {
    const re = tf.re(m.pattern, true);
    for (let x; (x = re.exec(text)); ) { match = x; if (x[0] === '') re.lastIndex++; }
  } else {
    match = tf.re(m.pattern).exec(text);
  }
  if (!match) return null;
  const start = text.lastIndexOf('\n', match.index) + 1;
  let end = text.indexOf('\n', match.index + match[0].length);
  if (end < 0) end = text.length;
  const line = tf.norm(text.slice(start, end)).slice(0, 300) || tf.norm(match[0]).slice(0, 300);
  const groups = {};
  for (const [k, v] of Object.entries(match.groups || {})) if (v !== undefined) groups[k] = v;
  return {index: i, cls: m.cls, text: line, groups};
};
// A state that makes any prompt futile: a bot check (title/url messages) or a login page.
tf.blocked = (cfg) => {
  for (let i = 0; i < cfg.messages.length; i++) {
    const m = cfg.messages[i];
    if (m.where === 'title' || m.where === 'url') {
      const hit = tf.found(m, i, m.where === 'title' ? document.title : location.href, false);
      if (hit) return hit;
    }
  }
  for (const u of cfg.login.urls) {
    if (tf.re(u).test(location.href)) return {index: -1, cls: 'auth', text: 'the site shows its login page (' + location.href + ')', groups: {}};
  }
  if (tf.first(cfg.login.selectors)) return {index: -1, cls: 'auth', text: 'the site shows a log-in control (login.selectors)', groups: {}};
  return null;
};
tf.message = (cfg, st, prompt) => {
  const blocked = tf.blocked(cfg);
  if (blocked) return blocked;
  let answer = null, page = null;
  for (let i = 0; i < cfg.messages.length; i++) {
    const m = cfg.messages[i];
    if (m.where === 'answer') {
      if (answer === null) answer = tf.answers(cfg, st).map(tf.text).join('\n');
      const hit = tf.found(m, i, answer, false);
      if (hit) return hit;
    } else if (m.where === 'page') {
      if (page === null) page = tf.pageText(prompt);
      // Only text that appeared after sending counts: old errors stay on a kept conversation.
      if (tf.count(page, m.pattern) > (st.pageCounts[i] || 0)) return tf.found(m, i, page, true);
    }
  }
  return null;
};
tf.dataUrl = (blob) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(blob);
});
tf.grab = async (el, src) => {
  let why = '';
  try {
    // data:, blob: and http(s) alike; credentials carry the page's cookies.
    const response = await fetch(src, {credentials: 'include'});
    if (response.ok) {
      const url = await tf.dataUrl(await response.blob());
      return {b64: url.slice(url.indexOf(',') + 1), src: src.slice(0, 200), via: 'fetch'};
    }
    why = 'HTTP ' + response.status;
  } catch (e) { why = String(e.message || e); }
  try {
    // Last resort, the picture as shown; a cross-origin image taints the canvas and this throws.
    const canvas = document.createElement('canvas');
    canvas.width = el.naturalWidth;
    canvas.height = el.naturalHeight;
    canvas.getContext('2d').drawImage(el, 0, 0);
    const url = canvas.toDataURL('image/png');
    return {b64: url.slice(url.indexOf(',') + 1), src: src.slice(0, 200), via: 'canvas', why};
  } catch (e) {
    return {error: 'image download failed (' + why + '; canvas copy: ' + (e.message || e) + ')', kind: 'transient'};
  }
};
"""

# (cfg, remaining_ms) -> {ok} | {message} | {missing, selectors}
READY = "async (cfg, ms) => {" + HELPERS + r"""
  const sels = cfg.conversation.ready.length ? cfg.conversation.ready : cfg.input.selectors;
  const r = await tf.until(() => {
    const blocked = tf.blocked(cfg);
    if (blocked) return {message: blocked};
    return tf.first(sels) ? {ok: true} : null;
  }, ms);
  return r || {missing: cfg.conversation.ready.length ? 'conversation.ready' : 'input.selectors', selectors: sels};
}"""

# (url, pattern) -> {ok, status, body}
PROBE = r"""async (url, pattern) => {
  try {
    const response = await fetch(url, {credentials: 'include', cache: 'no-store'});
    const body = await response.text();
    return {ok: new RegExp(pattern, 'i').test(body), status: response.status, body: body.slice(0, 200)};
  } catch (e) {
    return {ok: false, status: 0, body: String(e.message || e)};
  }
}"""

# Record what is on the page before sending, focus and empty the input box.
# (cfg, prompt) -> {ok} | {clear_keys} | {message} | {missing, selectors} | {error, kind, snapshot, reopen}
PREPARE = "async (cfg, prompt) => {" + HELPERS + r"""
  const blocked = tf.blocked(cfg);
  if (blocked) return {message: blocked};
  if (cfg.conversation.new === 'click') {
    const button = tf.first([cfg.conversation.selector]);
    if (!button) return {missing: 'conversation.selector', selectors: [cfg.conversation.selector]};
    button.click();
    const fresh = await tf.until(() => (!cfg.result.answer || tf.all(cfg.result.answer).length === 0)
                                       && tf.first(cfg.input.selectors), cfg.load_ms);
    if (!fresh) return {error: 'no fresh conversation after clicking conversation.selector', kind: 'transient',
                        snapshot: true, reopen: true};
  }
  const input = tf.first(cfg.input.selectors) || await tf.until(() => tf.first(cfg.input.selectors), cfg.sent_ms);
  if (!input) return {missing: 'input.selectors', selectors: cfg.input.selectors};
  if (tf.busy(cfg) && !(await tf.until(() => !tf.busy(cfg), cfg.sent_ms))) {
    return {error: 'the site is still busy with an earlier prompt (busy.selectors)', kind: 'transient', reopen: true};
  }
  const page = cfg.page_messages ? tf.pageText('') : '';
  window.__tabfleet = {
    oldKeys: new Set(tf.images(cfg).map((i) => i.key)),
    oldAnswers: new WeakSet(tf.all(cfg.result.answer)),
    oldTurns: new WeakSet(tf.all(cfg.submit.user_turn)),  // not a count: sites trim long threads
    pageCounts: cfg.messages.map((m) => m.where === 'page' ? tf.count(page, m.pattern) : 0),
  };
  input.focus();
  if (cfg.input.clear && tf.text(input).trim() !== '') {
    if (input.tagName === 'TEXTAREA' || input.tagName === 'INPUT') {
      input.select();
    } else {
      const range = document.createRange();
      range.selectNodeContents(input);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    document.execCommand('delete');
    // Editors that keep their own model may undo that, a moment later: then real keys.
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (tf.text(input).trim() !== '') return {clear_keys: true};
  }
  return {ok: true};
}"""

# Press send, check the prompt went, wait for the answer to settle, download the image.
# (cfg, prompt, {pressed, timeout_ms}) -> {b64, src, via, images, partial} | {src, use_response, ...} | {press}
#   | {message} | {missing, selectors} | {error, kind, snapshot, reopen} | {noimage, answer} | {timeout, ...}
SEND = "async (cfg, prompt, opts) => {" + HELPERS + r"""
  const st = window.__tabfleet;
  if (!st) return {error: 'the page navigated before the prompt was sent', kind: 'transient', reopen: true};
  const input = () => tf.first(cfg.input.selectors);
  const refocus = () => { const box = input(); if (box) box.focus(); };
  if (!opts.pressed) {
    const want = tf.norm(prompt).slice(0, 40);
    if (want && !tf.norm(tf.text(input())).includes(want)) {
      return {error: 'the prompt did not reach the input box (input.selectors); try input.method = "keys"',
              kind: 'transient', snapshot: true, reopen: true};
    }
    let button = tf.first(cfg.submit.selectors, true);
    if (!button && cfg.submit.selectors.length) {
      button = await tf.until(() => tf.first(cfg.submit.selectors, true), Math.min(cfg.sent_ms, 2000));
    }
    if (!button) {
      if (!cfg.submit.key) return {missing: 'submit.selectors', selectors: cfg.submit.selectors};
      refocus();
      return {press: cfg.submit.selectors.length ? 'no enabled element matches submit.selectors' : 'no send button'};
    }
    button.click();
  }
  const why = [];
  const sent = () => {
    why.length = 0;
    if (cfg.submit.confirm.includes('composer_empty') && tf.text(input()).trim() !== '') why.push('the input box was not emptied');
    if (cfg.submit.confirm.includes('user_turn') && !tf.all(cfg.submit.user_turn).some((t) => !st.oldTurns.has(t))) {
      why.push('no new submit.user_turn');
    }
    return why.length === 0;
  };
  if (!sent() && !(await tf.until(sent, cfg.sent_ms))) {
    if (!opts.pressed && cfg.submit.key) { refocus(); return {press: 'clicking send did not send (' + why.join(', ') + ')'}; }
    return {error: 'the prompt was not sent: ' + why.join(', '), kind: 'transient', snapshot: true, reopen: true};
  }
  const res = await new Promise((resolve) => {
    let done = false, busySeen = false, idleSince = null, lastSig = null, changed = performance.now();
    let lastBurst = -Infinity, pending = null, obs = null, tick = null, timer = null;
    const finish = (value) => {
      if (done) return;
      done = true;
      obs.disconnect();
      clearInterval(tick);
      clearTimeout(timer);
      clearTimeout(pending);
      document.removeEventListener('load', soon, true);
      resolve(value);
    };
    const check = () => {
      if (done) return;
      const now = performance.now();
      try {
        const hit = tf.message(cfg, st, prompt);
        if (hit) return finish({message: hit});
        const busy = tf.busy(cfg);
        if (busy) { busySeen = true; idleSince = null; } else if (idleSince === null) idleSince = now;
        const images = tf.images(cfg).filter((i) => !st.oldKeys.has(i.key));
        const answers = tf.answers(cfg, st);
        const sig = images.map((i) => i.key + ' ' + i.src + ' ' + i.done).join('\n') + '|'
                    + answers.length + ':' + answers.reduce((n, a) => n + tf.text(a).length, 0);
        if (sig !== lastSig) { lastSig = sig; changed = now; }
        const settled = !busy && now - idleSince >= cfg.busy.settle_ms, quiet = now - changed;
        const ready = images.filter((i) => i.done);
        const loading = images.length - ready.length;
        if (ready.length >= cfg.result.count && !loading && settled && quiet >= cfg.result.stable_ms) {
          return finish({images: ready});
        }
        const begun = busySeen || answers.length > 0 || images.length > 0;
        if (begun && settled && quiet >= Math.max(cfg.result.stable_ms, cfg.result.grace_ms)) {
          if (ready.length) return finish({images: ready, partial: true});
          if (!loading) return finish({noimage: true, answer: tf.norm(answers.map(tf.text).join('\n')).slice(0, 500)});
        }
      } catch (e) {
        finish({error: String(e.message || e), kind: 'permanent'});
      }
    };
    // Mutations come in bursts while a site streams: the first of a burst is checked at once (the
    // demo's answer is one burst), the rest at most every 20 ms, and once after the last.
    const soon = () => {
      if (done || pending) return;
      const wait = 20 - (performance.now() - lastBurst);
      const run = () => { pending = null; lastBurst = performance.now(); check(); };
      if (wait <= 0) run();
      else pending = setTimeout(run, wait);
    };
    obs = new MutationObserver(soon);
    obs.observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
    document.addEventListener('load', soon, true);  // an <img> finishing its load mutates nothing
    tick = setInterval(check, 200);
    timer = setTimeout(() => {
      const images = tf.images(cfg).filter((i) => !st.oldKeys.has(i.key));
      finish({timeout: true, busy: tf.busy(cfg), images: images.length, ready: images.filter((i) => i.done).length,
              scope: !!tf.scope(cfg)});
    }, Math.max(0, opts.timeout_ms));
    check();
  });
  if (!res.images) return res;
  const first = res.images[0];
  const extra = {images: res.images.length, partial: !!res.partial};
  if (cfg.download === 'response' && /^https?:/.test(first.src)) return Object.assign({src: first.src, use_response: true}, extra);
  return Object.assign(await tf.grab(first.el, first.src), extra);
}"""

# (cfg, src) -> {b64, ...} | {error, kind}: the in-page download, when the response body is not at hand.
DOWNLOAD = "async (cfg, src) => {" + HELPERS + r"""
  const el = tf.all(cfg.result.selector, tf.scope(cfg) || document).find((e) => (e.currentSrc || e.src) === src);
  return el ? tf.grab(el, src) : {error: 'the image left the page before it was downloaded', kind: 'transient'};
}"""

# (cfg, ms) -> {ok} | {message}: wait for a bot check (or a login wall) to go away by itself.
UNBLOCKED = "async (cfg, ms) => {" + HELPERS + r"""
  const sels = cfg.conversation.ready.length ? cfg.conversation.ready : cfg.input.selectors;
  const r = await tf.until(() => !tf.blocked(cfg) && tf.first(sels) ? {ok: true} : null, ms);
  return r || {message: tf.blocked(cfg) || {index: -1, cls: 'challenge', text: 'the bot check did not clear', groups: {}}};
}"""

# (ms) -> {ok}: can the page reach its own site at all?  A network failure (not an HTTP error) is {ok: false}.
REACH = r"""async (ms) => {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  try {
    await fetch(location.origin + '/', {method: 'HEAD', cache: 'no-store', mode: 'no-cors', signal: controller.signal});
    return {ok: true};
  } catch (e) {
    return {ok: controller.signal.aborted ? null : false, error: String(e.message || e)};
  } finally {
    clearTimeout(timer);
  }
}"""
