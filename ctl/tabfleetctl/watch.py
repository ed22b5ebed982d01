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
from .tables import FINISHED, fmt_seconds, jobs_table, memory_bar, workers_table
from .terminal import printable

EVENTS_SHOWN = 6


def frames(client: Client, job: str | None, interval: float, after: int | None = None) -> Iterator[dict[str, Any]]:
    """Snapshots pushed by the daemon until the job ends (or forever, with no job); `after`: events since that seq."""
    # The daemon pushes at least every `interval`; ten intervals of silence means it is gone.
    return client.stream("subscribe", {"job": job, "interval_s": interval, "after": after},
                         idle_timeout=max(30.0, interval * 10))


def follow(snapshots: Iterable[dict[str, Any]], job: str | None, live: bool, echo: Callable[[str], None],
           stderr: bool = False) -> dict[str, Any] | None:
    """Show each snapshot (live view, on stderr with `stderr`, or plain lines); return the watched job's last view."""
    show = LiveView(stderr=stderr) if live else PlainView(echo)
    last: dict[str, Any] | None = None
    try:
        for snap in snapshots:
            show.update(snap)
            if job is not None and snap["jobs"]:
                last = snap["jobs"][0]
    finally:
        show.close()
    return last


# -- lines shared by both views --------------------------------------------------


def job_line(job: dict[str, Any]) -> str:
    counts = f"{job['done']}/{job['total']} done, {job['failed']} failed, {job['running']} running, {job['pending']} pending"
    if job.get("cancelled"):
        counts += f", {job['cancelled']} cancelled"
    if job["state"] in FINISHED:  # an ended job makes nothing: no rate, no ETA
        return printable(f"job {job['id']} ({job['name']}) {job['state']}: {counts}")
    return printable(f"job {job['id']} ({job['name']}) {job['state']}: {counts}; {job['rate_per_min']:.1f}/min, "
                     f"eta {fmt_seconds(job['eta_s'])}")


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
    """A rich Live display redrawn on each pushed snapshot (no refresh thread: the daemon sets the pace).

    Each frame is laid out for the terminal's width at that moment, so it stays readable at 80 columns.
    """

    def __init__(self, console: Any = None, stderr: bool = False) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=stderr)
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

        width = self.console.width
        parts: list[Any] = [jobs_table(snap["jobs"], width), Text(""),
                            workers_table(snap["workers"], width, snap["time"]), Text(""),
                            memory_bar(snap["memory"], snap["workers"], width)]
        # Sites and outputs explain a stall: they wrap rather than lose their end.
        parts += [Text(printable(line)) for line in site_lines(snap)]
        if self.events:
            parts += [Text(""), Text("recent events", style="bold")]
            parts += [Text(event_line(e), style=_event_style(e), overflow="ellipsis", no_wrap=True) for e in self.events]
        return Group(*parts)


def _event_style(event: dict[str, Any]) -> str:
    return {"task_failed": "red", "task_retry": "yellow", "task_done": "green"}.get(event["kind"], "")
