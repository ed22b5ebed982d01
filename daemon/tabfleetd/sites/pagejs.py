"""The scripts a ProfileAdapter runs inside the page; each is one CDP round trip.

Every script takes the page config built by ``profile.page_config`` as its
first argument. Waiting happens inside the page and is driven by events: a
MutationObserver, captured load events, and one timer set for the exact moment
a time-based rule (settle_s, stable_s, grace_s) can next be met. So one prompt
costs three round trips however long the site takes: PREPARE, Input.insertText
and SEND (which also downloads the image). The shared helpers are in ``pagelib``.
"""

from __future__ import annotations

from .pagelib import HELPERS

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
  if (window.__tabfleet && window.__tabfleet.watch) window.__tabfleet.watch.stop();
  window.__tabfleet = null;
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
  window.__tabfleet = {
    oldKeys: new Set(tf.images(cfg).map((i) => i.key)),
    oldAnswers: new WeakSet(tf.all(cfg.result.answer)),
    oldTurns: new WeakSet(tf.all(cfg.submit.user_turn)),  // not a count: sites trim long threads
    watch: null,  // SEND starts it just before sending
  };
  input.focus();
  const held = tf.text(input);
  if (!cfg.input.clear && tf.norm(held) !== '') {
    return {error: 'the input box already holds text (' + JSON.stringify(tf.norm(held).slice(0, 80)) + ') and input.clear '
                   + 'is false, so the site would get the prompt glued to it; set input.clear = true', kind: 'permanent',
            snapshot: true};
  }
  if (cfg.input.clear && held.trim() !== '') {
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
    // Rich editors that keep their own model may undo that a moment later (then real keys); a plain box cannot.
    if (input.isContentEditable) await new Promise((resolve) => setTimeout(resolve, 50));
    if (tf.text(input).trim() !== '') return {clear_keys: true};
  }
  return {ok: true};
}"""

# Check the box holds exactly the prompt, press send, check the prompt went, wait for the answer, download the image.
# (cfg, prompt, {pressed, retyped, timeout_ms}) -> {b64, src, via, images, partial} | {src, use_response, ...} | {press}
#   | {retype} | {message} | {missing, selectors} | {error, kind, snapshot, reopen} | {noimage, answer} | {timeout, ...}
SEND = "async (cfg, prompt, opts) => {" + HELPERS + r"""
  const st = window.__tabfleet;
  if (!st) return {error: 'the page navigated before the prompt was sent', kind: 'transient', reopen: true};
  const input = () => tf.first(cfg.input.selectors);
  const refocus = () => { const box = input(); if (box) box.focus(); };
  if (!opts.pressed) {
    let button = tf.first(cfg.submit.selectors, true);
    if (!button && cfg.submit.selectors.length) {
      button = await tf.until(() => tf.first(cfg.submit.selectors, true), Math.min(cfg.sent_ms, 2000));
    }
    // The box must hold exactly the prompt, read back just before sending: never a prompt glued to old text.
    const box = input();
    const got = tf.text(box);
    if (!tf.same(got, tf.typed(box, prompt))) {
      // An empty box means the page replaced or reset it after it was typed into (a page still being built): type again.
      if (tf.norm(got) === '' && !opts.retyped) return {retype: box ? 'the input box was empty when read back' : 'no input box'};
      return tf.mismatch('the input box holds', got, tf.typed(box, prompt));
    }
    st.watch = tf.watch(cfg);  // from here on, what changes is this prompt's doing
    if (!button) {
      if (!cfg.submit.key) { st.watch.stop(); return {missing: 'submit.selectors', selectors: cfg.submit.selectors}; }
      refocus();
      return {press: cfg.submit.selectors.length ? 'no enabled element matches submit.selectors' : 'no send button'};
    }
    button.click();
  }
  const w = st.watch;
  if (!w) return {error: 'the page lost the prompt before it was sent', kind: 'transient', reopen: true};
  const why = [];
  let wrongTurn = null;
  const sent = () => {
    why.length = 0;
    wrongTurn = null;
    if (tf.message(cfg, st, w, prompt)) return true;  // the page answered already; the wait below reads it
    const confirm = cfg.submit.confirm;
    if (confirm.includes('composer_empty') && tf.text(input()).trim() !== '') why.push('the input box was not emptied');
    if (confirm.includes('user_turn')) {
      const turns = tf.all(cfg.submit.user_turn).filter((t) => !st.oldTurns.has(t));
      if (!turns.length) why.push('no new submit.user_turn');
      else if (!turns.some((t) => tf.same(tf.text(t), prompt))) {
        wrongTurn = turns[turns.length - 1];
        why.push('the new submit.user_turn does not hold the prompt');
      }
    }
    if (confirm.includes('busy') && !tf.begun(cfg, st, w)) why.push('no busy signal appeared (busy.selectors)');
    return why.length === 0;
  };
  if (!sent() && !(await tf.until(sent, cfg.sent_ms)) && !sent()) {
    if (wrongTurn) {
      w.stop();
      return tf.mismatch('the site received', tf.text(wrongTurn), prompt);
    }
    // Enter only when nothing shows the page took the click: a second send would make a second image.
    const reacted = tf.begun(cfg, st, w) || tf.all(cfg.submit.user_turn).some((t) => !st.oldTurns.has(t));
    if (!opts.pressed && cfg.submit.key && !reacted) { refocus(); return {press: 'clicking send did not send (' + why.join(', ') + ')'}; }
    w.stop();
    return {error: 'the prompt was not sent: ' + why.join(', '), kind: 'transient', snapshot: true, reopen: true};
  }
  const res = await new Promise((resolve) => {
    let done = false, idleSince = null, lastSig = null, changed = performance.now(), lastBurst = -Infinity;
    let pending = null, wake = null, tick = null, timer = null, best = null, bestAt = 0, seen = {images: 0, ready: 0};
    const finish = (value) => {
      if (done) return;
      done = true;
      w.stop();
      for (const t of [pending, wake, timer]) clearTimeout(t);
      clearInterval(tick);
      for (const kind of ['load', 'error', 'transitionend', 'animationend']) document.removeEventListener(kind, soon, true);
      resolve(value);
    };
    const later = (at) => { clearTimeout(wake); wake = setTimeout(check, Math.max(0, at - performance.now()) + 1); };
    const check = () => {
      if (done) return;
      const now = performance.now();
      try {
        const hit = tf.message(cfg, st, w, prompt);
        if (hit && (!best || hit.index < best.index)) best = hit;
        if (hit && !bestAt) bestAt = now;
        if (best) {
          // A second message shown with the first (a badge with its toast) may rank higher: wait a moment.
          if (best.blocked || now - bestAt >= tf.SETTLE_MS) return finish({message: best});
          return later(bestAt + tf.SETTLE_MS);
        }
        const busy = tf.busy(cfg);
        if (busy) { w.busySeen = true; idleSince = null; } else if (idleSince === null) idleSince = now;
        const settledAt = busy ? Infinity : idleSince + cfg.busy.settle_ms;
        const answers = tf.answers(cfg, st, w);
        // result.repeat = "signal": after the busy cycle this send caused (or, without busy selectors, a changed
        // reply), the slot holds the answer even when it is the image that was already there.
        const signalAt = cfg.result.repeat !== 'signal' || busy ? Infinity
          : cfg.busy.selectors.length ? (w.busySeen ? idleSince + Math.max(cfg.busy.settle_ms, tf.SETTLE_MS) : Infinity)
          : (answers.length ? now : Infinity);
        const images = tf.fresh(cfg, st, w, now >= signalAt);
        const sig = images.map((i) => i.key + ' ' + i.src + ' ' + i.done).join('\n') + '|'
                    + answers.length + ':' + answers.reduce((n, a) => n + tf.text(a).length, 0);
        if (sig !== lastSig) { lastSig = sig; changed = now; }
        const ready = images.filter((i) => i.done);
        const loading = images.length - ready.length;
        seen = {images: images.length, ready: ready.length};
        const stableAt = changed + cfg.result.stable_ms, graceAt = changed + Math.max(cfg.result.stable_ms, cfg.result.grace_ms);
        if (ready.length >= cfg.result.count && !loading && now >= settledAt && now >= stableAt) return finish({images: ready});
        const begun = w.busySeen || answers.length > 0 || images.length > 0;
        if (begun && now >= settledAt && now >= graceAt) {
          if (ready.length) return finish({images: ready, partial: true});
          if (!loading) return finish({noimage: true, answer: tf.norm(answers.map(tf.text).join('\n')).slice(0, 500)});
        }
        // Wake exactly when a time rule can next be met; DOM changes and image loads wake it sooner.
        const next = [settledAt, stableAt, graceAt, signalAt].filter((t) => t > now && t < Infinity);
        if (next.length) later(Math.min(...next));
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
    w.hooks.add(soon);
    // An <img> finishing its load mutates nothing; a spinner may fade out by CSS alone.
    for (const kind of ['load', 'error', 'transitionend', 'animationend']) document.addEventListener(kind, soon, true);
    tick = setInterval(check, tf.SAFETY_MS);
    timer = setTimeout(() => finish({timeout: true, busy: tf.busy(cfg), images: seen.images, ready: seen.ready,
                                     scope: !!tf.scope(cfg)}), Math.max(0, opts.timeout_ms));
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
