"""tabfleetctl watch: jobs, workers and memory, redrawn from the snapshots the daemon pushes.

On a terminal the view is drawn with rich (imported here, on first use, so
`import tabfleetctl.cli` stays light); elsewhere it prints plain lines, one
when a job's counts change and one per task event.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .client import Client
from .terminal import printable

FINISHED = ("done", "failed", "cancelled")
EVENTS_SHOWN = 6
BAR_WIDTH = 30
# Bar segments in drawing order: (count field, character, rich style).
SEGMENTS = (("done", "█", "green"), ("failed", "█", "red"), ("cancelled", "█", "magenta"),
            ("running", "█", "yellow"), ("pending", "░", "grey50"))


def frames(client: Client, job: str | None, interval: float, after: int | None = None) -> Iterator[dict[str, Any]]:
    """Snapshots pushed by the daemon until the job ends (or forever, with no job); `after`: events since that seq."""
    # The daemon pushes at least every `interval`; ten intervals of silence means it is gone.
    return client.stream("subscribe", {"job": job, "interval_s": interval, "after": after},
                         idle_timeout=max(30.0, interval * 10))


def follow(snapshots: Iterable[dict[str, Any]], job: str | None, live: bool, echo: Callable[[str], None]) -> dict[str, Any] | None:
    """Show each snapshot (live view or plain lines); return the watched job's last view."""
    show = LiveView() if live else PlainView(echo)
    last: dict[str, Any] | None = None
    try:
        for snap in snapshots:
            show.update(snap)
            if job is not None and snap["jobs"]:
                last = snap["jobs"][0]
    finally:
        show.close()
    return last


# -- numbers shared by both views ------------------------------------------------


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def segment_widths(job: dict[str, Any], width: int) -> list[int]:
    """Each segment's share of `width` (largest remainder), so the bar is always exactly `width` wide."""
    total = job["total"]
    if total <= 0:
        return [0] * (len(SEGMENTS) - 1) + [width]  # nothing to do: an empty (pending-coloured) bar
    exact = [job.get(name, 0) * width / total for name, _, _ in SEGMENTS]
    widths = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - widths[i], reverse=True)
    for i in by_remainder[:width - sum(widths)]:
        widths[i] += 1
    return widths


def job_line(job: dict[str, Any]) -> str:
    counts = f"{job['done']}/{job['total']} done, {job['failed']} failed, {job['running']} running, {job['pending']} pending"
    if job.get("cancelled"):
        counts += f", {job['cancelled']} cancelled"
    eta = "" if job["state"] in FINISHED else f", eta {fmt_seconds(job['eta_s'])}"
    return printable(f"job {job['id']} ({job['name']}) {job['state']}: {counts}; {job['rate_per_min']:.1f}/min{eta}")


def event_line(event: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(event["time"]))
    kind = event["kind"]
    where = f"job {event['job']} #{event['index']}" if "index" in event else (f"job {event['job']}" if event.get("job") else "")
    if kind == "task_done":
        what = f"done {event.get('file')} (attempt {event.get('attempts')}{', adopted' if event.get('adopted') else ''})"
    elif kind in ("task_retry", "task_failed"):
        verb = "retry" if kind == "task_retry" else "FAILED"
        retry = ""
        if kind == "task_retry" and event.get("retry_at"):
            retry = f", next try in {max(0, event['retry_at'] - event['time']):.0f} s"
        what = f"{verb} after attempt {event.get('attempts')}{retry}: {event.get('error_kind')}: {event.get('error')}"
    elif kind.startswith("job_"):
        what = f"now {kind[4:]}"
    else:
        details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("seq", "time", "kind", "job"))
        what = f"{kind.replace('_', ' ')} {details}".strip()
    return printable(" ".join(part for part in (when, where, what) if part))


def memory_line(memory: dict[str, Any], workers: list[dict[str, Any]]) -> str:
    """Used against the limit the governor holds the fleet to (the cgroup's, else the machine's)."""
    limit = memory.get("limit_mb") or memory["total_mb"]
    share = memory["used_mb"] * 100 / max(limit, 1)
    source = memory.get("source") or "machine"
    under = "" if source == "machine" else f" ({source.split(' /')[0]} limit)"
    held = "; new work held" if memory.get("holding") else ""
    workers_mb = sum(w.get("rss_mb") or 0 for w in workers)
    return (f"memory {memory['used_mb'] / 1024:.1f} of {limit / 1024:.1f} GiB used ({share:.0f} %){under}{held}; "
            f"daemon {memory['daemon_rss_mb']:.0f} MB, workers {workers_mb:.0f} MB")


def pace_line(pace: dict[str, Any]) -> str:
    """One site's pacing in words: its learned or configured pace, rate-limit answers, answer deadline, outage."""
    parts = []
    if pace.get("unreachable"):
        down = pace["unreachable"]
        parts.append(f"unreachable ({down['reason']}); next try in {down['retry_in_s']:.0f} s")
    window = pace.get("window")
    scope = {"site": ", all accounts together", "account": ", per account"}.get(pace.get("scope") or "", "")
    if window:
        parts.append(f"learned limit {window['count']} per {window['seconds']:g} s{scope}")
    elif pace.get("rate_per_min") is not None:
        parts.append(f"{pace['rate_per_min']:.1f}/min")
    else:
        parts.append("no limit known")
    if pace.get("holding_s"):
        parts.append(f"holding {pace['holding_s']:.0f} s")
    if "rate_limit_hits" in pace:
        signals = pace.get("signals", 0)
        parts.append(f"{pace['rate_limit_hits']} rate-limit answers, {signals} signal{'' if signals == 1 else 's'}")
    if pace.get("answer_deadline_s") is not None:
        p95 = pace.get("answer_p95_s")
        parts.append(f"answer deadline {pace['answer_deadline_s']:g} s" + (f" (p95 {p95:g} s)" if p95 is not None else ""))
    return "; ".join(parts)


def site_lines(snap: dict[str, Any]) -> list[str]:
    """One line per site with what pacing knows of it, and one per job waiting for its output."""
    lines = [f"site {site}: {pace_line(pace)}" for site, pace in (snap.get("limits") or {}).get("sites", {}).items()]
    return lines + [f"job {j['id']} waits for its output: {j['waiting']['reason']}" for j in snap["jobs"] if j.get("waiting")]


def browser_cell(worker: dict[str, Any]) -> str:
    """local, or a remote browser's host (never its secret), its connection and how often it was attached again."""
    browser = worker.get("browser") or {}
    if browser.get("kind") != "remote":
        return browser.get("kind") or "local"
    again = f", {browser['reconnects']} reconnects" if browser.get("reconnects") else ""
    return f"{browser.get('endpoint')} ({browser.get('connection')}{again})"


def cooling(worker: dict[str, Any], now: float) -> str:
    """Time left until the worker's account may send again, or until it restarts; blank when neither."""
    until = worker.get("cooling_until") or (worker.get("account") or {}).get("cooling_until") or worker.get("restart_at")
    return "" if not until or until <= now else f"{until - now:.0f} s"


# -- plain lines -------------------------------------------------------------------


class PlainView:
    """Lines for a pipe or a log: a job line when its counts or state change, a line per event."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.health: dict[int, str] = {}
        self.sites: set[str] = set()

    def update(self, snap: dict[str, Any]) -> None:
        for event in snap.get("events", []):
            self.echo(event_line(event))
        if snap.get("missed_events"):
            self.echo("(some events were missed: this client read too slowly)")
        for job in snap["jobs"]:
            key = (job["state"], job["done"], job["failed"], job["running"], job["pending"], job.get("cancelled"))
            if self.seen.get(job["id"]) != key:
                self.seen[job["id"]] = key
                self.echo(job_line(job))
        for line in site_lines(snap):
            kind = re.sub(r"[0-9.]+", "N", line)  # a new state is news, a changing countdown is not
            if kind not in self.sites:
                self.sites.add(kind)
                self.echo(line)
        for worker in snap["workers"]:
            health = worker.get("health")  # older daemons report no health; then workers stay quiet here
            if health is None:
                continue
            kind = re.sub(r"[0-9.]+", "N", health)  # "restarting in 12 s" is news once, not every second
            if kind != self.health.get(worker["id"], "ok"):
                self.echo(printable(f"worker {worker['id']}: {health}"))
                self.health[worker["id"]] = kind

    def close(self) -> None:
        pass


# -- the live view ---------------------------------------------------------------


class LiveView:
    """A rich Live display redrawn on each pushed snapshot (no refresh thread: the daemon sets the pace)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console()
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_SHOWN)
        self.live = Live(console=self.console, auto_refresh=False, transient=False, redirect_stdout=False,
                         redirect_stderr=False)
        self.live.start()

    def update(self, snap: dict[str, Any]) -> None:
        self.events.extend(snap.get("events", []))
        self.live.update(self.render(snap), refresh=True)

    def close(self) -> None:
        self.live.stop()

    def render(self, snap: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.text import Text

        parts: list[Any] = [self.jobs_table(snap["jobs"]), Text(""), self.workers_table(snap["workers"], snap["time"]),
                            Text(""), self.memory_bar(snap["memory"], snap["workers"])]
        parts += [Text(line, overflow="ellipsis", no_wrap=True) for line in site_lines(snap)]
        if self.events:
            parts += [Text(""), Text("recent events", style="bold")]
            parts += [Text(event_line(e), style=_event_style(e), overflow="ellipsis", no_wrap=True) for e in self.events]
        return Group(*parts)

    def jobs_table(self, jobs: list[dict[str, Any]]) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="jobs", title_justify="left", title_style="bold", expand=False, pad_edge=False)
        for name, justify in (("job", "left"), ("state", "left"), ("progress", "left"), ("done", "right"),
                              ("failed", "right"), ("running", "right"), ("pending", "right"), ("rate/min", "right"),
                              ("eta", "right")):
            table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        if not jobs:
            table.add_row("no jobs", *[""] * 8)
        for job in jobs:
            bar = Text()
            for (_name, char, style), width in zip(SEGMENTS, segment_widths(job, BAR_WIDTH)):
                bar.append(char * width, style=style)
            pct = 100 * (job["done"] + job["failed"] + job.get("cancelled", 0)) / max(job["total"], 1)
            bar.append(f" {pct:3.0f}%")
            failed = Text(str(job["failed"]), style="red" if job["failed"] else "")
            eta = "" if job["state"] in FINISHED else fmt_seconds(job["eta_s"])
            # Text, not markup strings, for anything a user wrote: a prompt like "[[error]]" must print as itself.
            table.add_row(Text.assemble(printable(job["name"][:24]), (f" {job['id']}", "dim")), _state_text(job["state"]), bar,
                          f"{job['done']}/{job['total']}", failed, str(job["running"]), str(job["pending"]),
                          f"{job['rate_per_min']:.1f}", eta)
        return table

    def workers_table(self, workers: list[dict[str, Any]], now: float) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="workers", title_justify="left", title_style="bold", pad_edge=False)
        table.add_column("id", justify="right")
        table.add_column("state")
        table.add_column("health", no_wrap=True, max_width=30, overflow="ellipsis")
        table.add_column("current prompt", no_wrap=True, max_width=48, overflow="ellipsis")
        table.add_column("done", justify="right")
        table.add_column("rss", justify="right")
        table.add_column("restarts", justify="right")
        table.add_column("cooling", justify="right")
        table.add_column("browser", no_wrap=True, max_width=40, overflow="ellipsis")
        for w in workers:
            health = printable(w.get("health") or "")
            table.add_row(str(w["id"]), _state_text(w["state"]), Text(health, style="green" if health == "ok" else "yellow"),
                          Text(printable(w.get("current_prompt") or "")), str(w["tasks_done"]),
                          f"{w['rss_mb']:.0f} MB", str(w["restarts"]), cooling(w, now), Text(printable(browser_cell(w))))
        return table

    def memory_bar(self, memory: dict[str, Any], workers: list[dict[str, Any]]) -> Any:
        from rich.text import Text

        limit = memory.get("limit_mb") or memory["total_mb"]
        share = min(1.0, memory["used_mb"] / max(limit, 1))
        filled = round(share * BAR_WIDTH)
        style = "green" if share < 0.7 else "yellow" if share < 0.9 else "red"
        text = Text("memory  ", style="bold")
        text.append("█" * filled, style=style)
        text.append("░" * (BAR_WIDTH - filled), style="grey50")
        text.append("  " + memory_line(memory, workers)[len("memory "):])
        return text


def _state_text(state: str) -> Any:
    from rich.text import Text

    styles = {"active": "cyan", "busy": "cyan", "idle": "green", "done": "green", "failed": "red", "dead": "red",
              "blocked": "red", "paused": "yellow", "restarting": "yellow", "starting": "yellow", "cancelled": "magenta"}
    return Text(state, style=styles.get(state, ""))


def _event_style(event: dict[str, Any]) -> str:
    return {"task_failed": "red", "task_retry": "yellow", "task_done": "green"}.get(event["kind"], "")
