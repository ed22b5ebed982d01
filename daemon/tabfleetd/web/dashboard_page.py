"""The dashboard's page, style and script, served by dashboard.py (kept apart so that module stays about HTTP).

The script builds every element from /api/state with textContent, never
innerHTML, so a prompt can hold any text without becoming markup.
"""

from __future__ import annotations

HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tabfleet</title>
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head>
<body data-refreshes="0">
<header>
  <h1>tabfleet</h1>
  <div id="summary" class="summary"></div>
  <div id="memory" class="memory" title="memory in use on this machine"></div>
  <div id="conn" class="conn">connecting…</div>
</header>
<main>
  <section class="card" id="jobs-card">
    <h2>Jobs</h2>
    <div id="jobs"><p class="empty">No jobs yet.</p></div>
  </section>
  <section class="card" id="workers-card">
    <h2>Workers</h2>
    <table id="workers">
      <thead><tr><th>#</th><th>state</th><th>health</th><th>current prompt</th><th class="num">done</th>
      <th class="num">memory</th><th class="num">restarts</th><th class="num">cooling</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section class="card" id="events-card">
    <h2>Recent task events</h2>
    <ol id="events"></ol>
  </section>
  <section class="card wide" id="gallery-card">
    <h2>Latest images</h2>
    <div id="gallery" class="gallery"><p class="empty">No images yet.</p></div>
  </section>
</main>
</body>
</html>
"""

CSS = """
:root {
  --bg: #0e1116; --card: #161b22; --line: #2a313c; --text: #e6edf3; --dim: #8b949e;
  --done: #3fb950; --failed: #f85149; --cancelled: #a371f7; --running: #d29922; --pending: #30363d;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { display: flex; align-items: center; gap: 24px; padding: 14px 24px; border-bottom: 1px solid var(--line);
  background: #11161d; position: sticky; top: 0; z-index: 1; }
h1 { font-size: 18px; margin: 0; letter-spacing: .5px; }
h1::before { content: ""; display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  background: var(--done); margin-right: 8px; vertical-align: 1px; }
h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .8px; color: var(--dim); margin: 0 0 12px; }
.summary { color: var(--dim); }
.summary b { color: var(--text); font-weight: 600; }
.memory { margin-left: auto; display: flex; align-items: center; gap: 8px; color: var(--dim); font-size: 12px; }
.memory .bar { width: 120px; }
.conn { font-size: 12px; color: var(--dim); min-width: 110px; text-align: right; }
.conn.offline { color: var(--failed); font-weight: 600; }
main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px; padding: 16px 24px 32px;
  align-items: start; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; }
.wide { grid-column: 1 / -1; }
#jobs-card { grid-column: 1 / -1; }
.empty { color: var(--dim); margin: 4px 0; }
.job { display: grid; grid-template-columns: minmax(160px, 1.2fr) minmax(220px, 3fr) 170px; gap: 6px 18px;
  align-items: center; padding: 10px 0; border-top: 1px solid var(--line); }
.job:first-child { border-top: 0; padding-top: 0; }
.job .name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.job .id { color: var(--dim); font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.job .counts { grid-column: 2; display: flex; gap: 14px; color: var(--dim); font-size: 12px; flex-wrap: wrap; }
.job .counts b { color: var(--text); font-weight: 600; }
.job .speed { grid-row: 1 / span 2; grid-column: 3; text-align: right; color: var(--dim); font-size: 12px; }
.job .speed b { display: block; color: var(--text); font-size: 16px; font-weight: 600; }
.dot { display: inline-block; width: 8px; height: 8px; border-radius: 2px; margin-right: 5px; }
.bar { display: flex; height: 12px; border-radius: 6px; overflow: hidden; background: var(--pending); }
.bar span { height: 100%; transition: width .6s ease; }
.seg-done, .dot.done { background: var(--done); }
.seg-failed, .dot.failed { background: var(--failed); }
.seg-cancelled, .dot.cancelled { background: var(--cancelled); }
.seg-running, .dot.running { background: var(--running); }
.seg-pending, .dot.pending { background: var(--pending); outline: 1px solid #444c56; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 11px; font-weight: 600;
  text-transform: uppercase; letter-spacing: .4px; background: #21262d; color: var(--dim); margin-left: 8px; }
.state.active, .state.busy { background: #0d2d4d; color: #58a6ff; }
.state.done, .state.idle, .state.ok { background: #12361f; color: var(--done); }
.state.failed, .state.dead, .state.blocked { background: #3d1519; color: var(--failed); }
.state.paused, .state.restarting, .state.starting { background: #3a2c0c; color: var(--running); }
.state.cancelled { background: #2a1d47; color: var(--cancelled); }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th { text-align: left; color: var(--dim); font-weight: 500; font-size: 12px; padding: 0 8px 6px 0; }
td { padding: 6px 8px 6px 0; border-top: 1px solid var(--line); vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.prompt { max-width: 260px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: var(--dim); }
#events { list-style: none; margin: 0; padding: 0; font-size: 12px; }
#events li { padding: 5px 0; border-top: 1px solid var(--line); display: flex; gap: 8px; }
#events li:first-child { border-top: 0; }
#events .when { color: var(--dim); font-variant-numeric: tabular-nums; }
#events .what { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
#events .task_done .kind { color: var(--done); }
#events .task_retry .kind { color: var(--running); }
#events .task_failed .kind { color: var(--failed); }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(185px, 1fr)); gap: 14px; }
.shot { margin: 0; background: #0b0e13; border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
.shot img { display: block; width: 100%; aspect-ratio: 1 / 1; object-fit: cover; background: #1c2128; }
.shot figcaption { padding: 8px 10px; font-size: 12px; line-height: 1.35; }
.shot .prompt { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
.shot .meta { color: var(--dim); font-size: 11px; margin-top: 4px; font-family: ui-monospace, Menlo, monospace;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.shot img.missing { opacity: .15; }
@media (max-width: 900px) { main { grid-template-columns: 1fr; } .memory { display: none; } }
"""

JS = r"""
"use strict";
const REFRESH_MS = 2000;
const SEGMENTS = ["done", "failed", "cancelled", "running", "pending"];
const FINISHED = new Set(["done", "failed", "cancelled"]);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "style") Object.assign(node.style, value);  // CSSOM, which the CSP allows (a style attribute it would not)
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  seconds = Math.round(seconds);
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)}h ${String(Math.floor(seconds % 3600 / 60)).padStart(2, "0")}m`;
  if (seconds >= 60) return `${Math.floor(seconds / 60)}m ${String(seconds % 60).padStart(2, "0")}s`;
  return `${seconds}s`;
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], {hour12: false});
}

function stateBadge(state) {
  return el("span", {class: `state ${state.split(/[ :]/)[0]}`}, state);
}

function bar(job) {
  const total = Math.max(job.total, 1);
  return el("div", {class: "bar", title: SEGMENTS.map(s => `${job[s] || 0} ${s}`).join(", ")},
    ...SEGMENTS.filter(s => s !== "pending").map(s =>
      el("span", {class: `seg-${s}`, style: {width: `${100 * (job[s] || 0) / total}%`}})));
}

function renderJobs(jobs) {
  const box = document.getElementById("jobs");
  box.replaceChildren();
  if (!jobs.length) { box.append(el("p", {class: "empty"}, "No jobs yet.")); return; }
  for (const job of [...jobs].reverse()) {
    const ended = FINISHED.has(job.state);
    const counts = el("div", {class: "counts"},
      ...SEGMENTS.filter(s => s !== "cancelled" || job.cancelled).map(s =>
        el("span", {class: `count ${s}`, "data-count": s},
          el("i", {class: `dot ${s}`}), el("b", {}, job[s] || 0), ` ${s}`)));
    const speed = el("div", {class: "speed"},
      el("b", {class: "progress-text"}, `${job.done} / ${job.total}`),
      ended ? (job.finished ? `ended ${clock(job.finished)}` : "")
            : `${job.rate_per_min.toFixed(1)}/min · ETA ${duration(job.eta_s)}`);
    box.append(el("div", {class: "job", "data-job": job.id, "data-state": job.state},
      el("div", {}, el("div", {class: "name", title: job.name}, job.name, stateBadge(job.state)),
        el("div", {class: "id"}, `${job.id} · ${job.site}`)),
      bar(job), speed, el("div"), counts));
  }
}

function renderWorkers(workers, now) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  for (const w of workers) {
    const until = w.cooling_until || (w.account && w.account.cooling_until) || w.restart_at;
    body.append(el("tr", {class: "worker", "data-worker": w.id, "data-state": w.state},
      el("td", {class: "num"}, w.id),
      el("td", {}, stateBadge(w.state)),
      el("td", {}, w.health ? stateBadge(w.health) : ""),
      el("td", {class: "prompt", title: w.current_prompt || w.last_error || ""}, w.current_prompt || ""),
      el("td", {class: "num"}, w.tasks_done),
      el("td", {class: "num"}, `${Math.round(w.rss_mb)} MB`),
      el("td", {class: "num"}, w.restarts),
      el("td", {class: "num"}, until && until > now ? duration(until - now) : "")));
  }
}

function renderMemory(memory, workers) {
  const limit = memory.limit_mb || memory.total_mb;
  const share = Math.min(1, memory.used_mb / Math.max(limit, 1));
  const workersMb = workers.reduce((sum, w) => sum + (w.rss_mb || 0), 0);
  const fill = el("span", {style: {width: `${100 * share}%`,
                               background: `var(--${share < .7 ? "done" : share < .9 ? "running" : "failed"})`}});
  document.getElementById("memory").replaceChildren(
    el("span", {}, `memory ${(memory.used_mb / 1024).toFixed(1)} / ${(limit / 1024).toFixed(1)} GiB`),
    el("div", {class: "bar"}, fill),
    el("span", {}, `workers ${Math.round(workersMb)} MB${memory.holding ? " · new work held" : ""}`));
}

function renderSummary(state) {
  const active = state.jobs.filter(j => !FINISHED.has(j.state)).length;
  const busy = state.workers.filter(w => w.state === "busy").length;
  document.getElementById("summary").replaceChildren(
    el("b", {}, active), active === 1 ? " job running · " : " jobs running · ",
    el("b", {}, `${busy}/${state.workers.length}`), " workers busy");
}

function renderEvents(events) {
  const list = document.getElementById("events");
  list.replaceChildren();
  if (!events.length) { list.append(el("li", {class: "empty"}, "Nothing yet.")); return; }
  const kinds = {task_done: "done", task_retry: "retry", task_failed: "failed"};
  for (const e of events) {
    const why = e.kind === "task_done" ? e.prompt : `${e.error_kind || ""}: ${e.error || ""}`;
    list.append(el("li", {class: e.kind},
      el("span", {class: "when"}, clock(e.time)),
      el("span", {class: "kind"}, kinds[e.kind] || e.kind),
      el("span", {class: "what", title: `${e.job} #${e.index}: ${e.prompt}`}, `#${e.index} ${why}`)));
  }
}

let galleryKey = "";
function renderGallery(items) {
  // Rebuild only when the set changes, so images are not reloaded on every refresh.
  const key = items.map(i => i.src).join("|");
  if (key === galleryKey) return;
  galleryKey = key;
  const box = document.getElementById("gallery");
  box.replaceChildren();
  if (!items.length) { box.append(el("p", {class: "empty"}, "No images yet.")); return; }
  for (const item of items) {
    const img = el("img", {src: item.src, alt: item.prompt, loading: "lazy", decoding: "async"});
    img.addEventListener("error", () => img.classList.add("missing"));
    box.append(el("figure", {class: "shot", "data-job": item.job, "data-index": item.index},
      img,
      el("figcaption", {}, el("div", {class: "prompt", title: item.prompt}, item.prompt),
        el("div", {class: "meta"}, `${item.job} #${item.index} · ${clock(item.finished)}`))));
  }
}

async function refresh() {
  const conn = document.getElementById("conn");
  try {
    const response = await fetch("/api/state", {cache: "no-store"});
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const state = await response.json();
    renderSummary(state);
    renderMemory(state.memory, state.workers);
    renderJobs(state.jobs);
    renderWorkers(state.workers, state.time);
    renderEvents(state.events);
    renderGallery(state.gallery);
    conn.className = "conn";
    conn.textContent = `updated ${clock(state.time)}`;
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
  } catch (error) {
    conn.className = "conn offline";
    conn.textContent = "daemon unreachable";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
"""
