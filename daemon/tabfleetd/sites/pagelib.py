"""The helpers every page script shares (``tf.*``), pasted at the top of each script in ``pagejs``.

A page keeps nothing of ours between prompts except ``window.__tabfleet``: the baseline PREPARE
records, and the *watch* SEND starts just before it clicks send. The watch is a MutationObserver
that records what changed after the send: elements added or whose text changed, elements shown or
hidden, ``<img>`` elements inserted or given a src, and whether a busy signal appeared. Answers and
messages are recognised from that record, never from what was already on the page:

- an image counts as this prompt's when its src is new, when the page inserted it or set its src
  again after the send (``result.repeat = "touched"``), or, for one result slot that a repeated
  prompt leaves untouched, once the busy cycle this send caused has ended (``"signal"``);
- a message matches text in blocks that were added or changed since the send, inside its region
  (``where``: the reply, the result scope and open dialogs by default; the whole page only when a
  profile says so), or an element named by its selector that is new, newly shown or changed.
  So an old toast never matches again, a toast that merges a second error into itself does, and a
  sidebar title made from the prompt's words is outside the default region.
"""

from __future__ import annotations

HELPERS = r"""
const tf = {};
tf.DIALOGS = 'dialog[open], [role="dialog"], [role="alertdialog"], [aria-modal="true"]';
tf.SETTLE_MS = 150;   // messages shown together: the first entry in profile order decides
tf.SAFETY_MS = 1000;  // a safety net for states reached without any DOM change; never the normal path
tf.REVEAL = new Set(['hidden', 'open', 'aria-hidden', 'class', 'style']);
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
tf.same = (a, b) => tf.norm(a) === tf.norm(b);
// What the box can hold of the prompt: an <input> drops line breaks.
tf.typed = (box, prompt) => (box && box.tagName === 'INPUT') ? String(prompt).replace(/[\r\n]+/g, '') : String(prompt);
tf.mismatch = (what, got, prompt) => ({
  error: what + ' ' + JSON.stringify(tf.norm(got).slice(0, 160)) + ', not the prompt ' + JSON.stringify(tf.norm(prompt).slice(0, 160))
         + ': the site would make another prompt\'s image, so nothing is saved (check input.selectors, input.clear, input.method)',
  kind: 'transient', snapshot: true, reopen: true});
tf.re = (p, g) => new RegExp(p, g ? 'gi' : 'i');
// Resolve once fn() is truthy: checked on every DOM change and image load, so no polling on the way.
tf.until = (fn, ms) => new Promise((resolve, reject) => {
  let done = false, obs = null, tick = null, timer = null;
  const end = () => {
    done = true;
    if (obs) obs.disconnect();
    clearInterval(tick);
    clearTimeout(timer);
    document.removeEventListener('load', check, true);
  };
  function check() {
    if (done) return;
    try { const v = fn(); if (v) { end(); resolve(v); } } catch (e) { end(); reject(e); }
  }
  check();
  if (done) return;
  obs = new MutationObserver(check);
  obs.observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
  document.addEventListener('load', check, true);
  tick = setInterval(check, tf.SAFETY_MS);
  timer = setTimeout(() => { if (!done) { end(); resolve(null); } }, Math.max(0, ms));
});
tf.scope = (cfg) => cfg.result.scope ? document.querySelector(cfg.result.scope) : document.body;
tf.key = (cfg, src) => {
  if (!cfg.result.dedupe) return src;
  const m = src.match(tf.re(cfg.result.dedupe));
  return m ? (m[1] !== undefined ? m[1] : m[0]) : src;
};
// The result images by identity (one image may render as several <img>): {key, src, done, el, els}.
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
    if (!seen) found.set(key, {key, src, done, el, els: [el]});
    else {
      seen.els.push(el);
      if (done && !seen.done) Object.assign(seen, {src, done, el});
    }
  }
  return [...found.values()];
};
tf.busy = (cfg) => cfg.busy.selectors.some((s) => tf.all(s).some(tf.visible));
tf.toastLike = (el) => el.tagName === 'DIALOG' || el.hasAttribute('aria-live') || el.hasAttribute('popover')
  || /^(alert|alertdialog|dialog|status|log|tooltip)$/.test(el.getAttribute('role') || '');
// The record of what changed after the send (see the module's docstring).
tf.watch = (cfg) => {
  const w = {content: new Set(), shown: new Set(), imgs: new Set(), gone: [], busySeen: false, hooks: new Set(),
             blocks: new WeakMap()};
  w.before = cfg.messages.map((m) => m.selector ? new Set(tf.all(m.selector).filter(tf.visible)) : null);
  const keep = (el) => { if (el && el.nodeType === 1) w.content.add(el); };
  w.obs = new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'childList') {
        for (const n of r.addedNodes) {
          if (n.nodeType === 1) {
            w.content.add(n);
            if (n.tagName === 'IMG') w.imgs.add(n);
            else if (n.firstElementChild) for (const img of n.querySelectorAll('img')) w.imgs.add(img);
          } else if (n.nodeType === 3) keep(r.target);
        }
        // A toast may come and go between two checks: keep what was added after the send and then removed.
        for (const n of r.removedNodes) {
          if (n.nodeType === 1 && w.content.has(n)) {
            w.gone.push({el: n, parent: r.target});
            if (w.gone.length > 50) w.gone.shift();
          }
        }
      } else if (r.type === 'characterData') {
        keep(r.target.parentElement);
      } else {
        const el = r.target;
        if (el.tagName === 'IMG' && (r.attributeName === 'src' || r.attributeName === 'srcset')) w.imgs.add(el);
        if (tf.REVEAL.has(r.attributeName)) {
          w.shown.add(el);
          // Its text counts as new only when it was plainly shown (a class change on <main> is no news).
          if (r.attributeName !== 'class' && r.attributeName !== 'style' || tf.toastLike(el)) w.content.add(el);
        }
      }
    }
    // A busy signal may be shown and gone between two checks: look at every batch until one was seen.
    if (!w.busySeen && tf.busy(cfg)) w.busySeen = true;
    for (const hook of w.hooks) hook();
  });
  w.obs.observe(document.documentElement, {subtree: true, childList: true, attributes: true, characterData: true});
  w.stop = () => { w.obs.disconnect(); w.hooks.clear(); };
  return w;
};
tf.inside = (w, el) => {
  for (let p = el; p; p = p.parentElement) if (w.content.has(p)) return true;
  for (const n of w.content) if (el.contains(n)) return true;
  return false;
};
// Replies: result.answer elements added since the baseline, or (answer_in_place) changed since the send.
tf.answers = (cfg, st, w) => !cfg.result.answer ? [] : tf.all(cfg.result.answer).filter(
  (a) => !st.oldAnswers.has(a) || (cfg.result.answer_in_place && !!w && tf.inside(w, a)));
// Images that are this prompt's answer so far (see result.repeat).
tf.fresh = (cfg, st, w, signal) => tf.images(cfg).filter((i) => !st.oldKeys.has(i.key) || signal
  || (cfg.result.repeat !== 'never' && i.els.some((e) => w.imgs.has(e))));
tf.begun = (cfg, st, w) => w.busySeen || tf.answers(cfg, st, w).length > 0 || tf.fresh(cfg, st, w, false).length > 0;
tf.blockOf = (w, el) => {
  let b = w.blocks.get(el);
  if (b) return b;
  b = el;
  while (b.parentElement && b !== document.body) {
    const d = getComputedStyle(b).display;
    if (d !== 'inline' && d !== 'contents') break;
    b = b.parentElement;
  }
  w.blocks.set(el, b);
  return b;
};
// The top-most blocks that were added or changed since the send (a merged toast's new count reads as its whole line).
tf.roots = (w) => {
  const blocks = new Set();
  for (const n of w.content) {
    if (!n.isConnected) { w.content.delete(n); continue; }
    blocks.add(tf.blockOf(w, n));
  }
  const out = [];
  for (const b of blocks) {
    let top = true;
    for (let p = b.parentElement; p && top; p = p.parentElement) if (blocks.has(p)) top = false;
    if (top) out.push(b);
  }
  return out;
};
tf.regions = (cfg, st, w, where) => {
  if (where === 'page') return document.body ? [document.body] : [];
  const answers = tf.answers(cfg, st, w);
  if (where === 'answer') return answers;
  const scope = tf.scope(cfg);
  return [...answers, ...(scope ? [scope] : []), ...tf.all(tf.DIALOGS).filter(tf.visible)];
};
tf.within = (regions, el) => regions.some((r) => r === el || r.contains(el));
tf.excluded = (cfg, el) => [...cfg.input.selectors, cfg.submit.user_turn].some((s) => s && el.closest(s));
tf.echoless = (text, prompt) => {
  if (!prompt) return text;
  let out = text.split(prompt).join(' ');  // the prompt's own echo never counts
  const flat = tf.norm(prompt);
  if (flat && flat !== prompt) out = out.split(flat).join(' ');
  return out;
};
// The text a message with this `where` reads: what is new or changed since the send, in its region.
tf.regionText = (cfg, st, w, where, prompt) => {
  if (where === 'answer') return tf.echoless(tf.answers(cfg, st, w).map(tf.text).join('\n'), prompt);
  const regions = tf.regions(cfg, st, w, where);
  const parts = [], seen = new Set();
  for (const root of tf.roots(w)) {
    for (const region of regions) {
      const el = (region === root || region.contains(root)) ? root : root.contains(region) ? region : null;
      if (el && !seen.has(el) && !tf.excluded(cfg, el)) { seen.add(el); parts.push(tf.text(el)); }
    }
  }
  for (const g of w.gone) if (tf.within(regions, g.parent)) parts.push(g.el.textContent || '');
  return tf.echoless(parts.join('\n'), prompt);
};
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
// An element a message names by selector: visible, in its region, and new, newly shown or changed since the send.
tf.changed = (w, i, el) => {
  if (w.before[i] && !w.before[i].has(el)) return true;
  for (let p = el; p && p !== document.body; p = p.parentElement) if (w.shown.has(p)) return true;
  return tf.inside(w, el);
};
tf.badge = (cfg, st, w, m, i) => {
  const hit = (text) => !m.pattern
    ? {index: i, cls: m.cls, text: tf.norm(text).slice(0, 300) || 'an element matching ' + m.selector, groups: {}}
    : tf.found(m, i, text, false);
  const regions = tf.regions(cfg, st, w, m.where);
  for (const region of regions) {
    const els = tf.all(m.selector, region);
    if (region.matches(m.selector)) els.unshift(region);
    for (const el of els) {
      if (!tf.visible(el) || tf.excluded(cfg, el) || !tf.changed(w, i, el)) continue;
      const found = hit(tf.text(el));
      if (found) return found;
    }
  }
  for (const g of w.gone) {
    if (!tf.within(regions, g.parent)) continue;
    const el = g.el.matches(m.selector) ? g.el : g.el.querySelector(m.selector);
    const found = el && hit(el.textContent || '');
    if (found) return found;
  }
  return null;
};
// A state that makes any prompt futile: a bot check (title/url messages) or a login page.
tf.blocked = (cfg) => {
  for (let i = 0; i < cfg.messages.length; i++) {
    const m = cfg.messages[i];
    if (m.where === 'title' || m.where === 'url') {
      const hit = tf.found(m, i, m.where === 'title' ? document.title : location.href, false);
      if (hit) return Object.assign(hit, {blocked: true});
    }
  }
  for (const u of cfg.login.urls) {
    if (tf.re(u).test(location.href)) {
      return {index: -1, cls: 'auth', text: 'the site shows its login page (' + location.href + ')', groups: {}, blocked: true};
    }
  }
  if (tf.first(cfg.login.selectors)) {
    return {index: -1, cls: 'auth', text: 'the site shows a log-in control (login.selectors)', groups: {}, blocked: true};
  }
  return null;
};
// The first message (in profile order) that matches what changed since the send, or null.
tf.message = (cfg, st, w, prompt) => {
  const blocked = tf.blocked(cfg);
  if (blocked) return blocked;
  const texts = {};
  for (let i = 0; i < cfg.messages.length; i++) {
    const m = cfg.messages[i];
    if (m.where === 'title' || m.where === 'url') continue;
    let hit;
    if (m.selector) {
      hit = tf.badge(cfg, st, w, m, i);
    } else {
      if (texts[m.where] === undefined) texts[m.where] = tf.regionText(cfg, st, w, m.where, prompt);
      hit = tf.found(m, i, texts[m.where], m.where !== 'answer');
    }
    if (hit) return hit;
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
