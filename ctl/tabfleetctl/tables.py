"""The jobs and workers tables of `status` and `watch`, drawn with rich to fit the terminal's width.

A table that does not fit gives up what matters least first: its flexible
columns (names, prompts, paths) are cut with an ellipsis, the progress bar
narrows, columns stand one space apart instead of two, then columns the bar
already shows (running, pending) go.  Numbers are never cut.  rich is imported here on first use, so `import
tabfleetctl.cli` stays light.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .terminal import printable

FINISHED = ("done", "failed", "cancelled")
GAPS = (2, 1)  # spaces between two columns: two when there is room
CHEAP = 3  # columns dropped at this level or above go before flexible columns are cut below their preferred width
# Bar segments in drawing order: (count field, character, rich style).
SEGMENTS = (("done", "█", "green"), ("failed", "█", "red"), ("cancelled", "█", "magenta"),
            ("running", "█", "yellow"), ("pending", "░", "grey50"))
STATE_STYLES = {"active": "cyan", "busy": "cyan", "idle": "green", "done": "green", "failed": "red", "dead": "red",
                "blocked": "red", "paused": "yellow", "restarting": "yellow", "starting": "yellow",
                "cancelled": "magenta"}


@dataclass
class Column:
    """One column: its cells, and how it may give way when the table is too wide."""

    header: str
    cells: list[Any]  # str or rich Text
    justify: str = "left"
    flex: int = 0  # >0: cut with an ellipsis down to this width when room is short
    floor: int = 0  # with flex: how far it may be cut when nothing else can give way (default: its header)
    drop: int = 0  # >0: left out when room is short, highest first; from CHEAP up before any name is cut short
    style: str = ""
    natural: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.natural = max([len(self.header)] + [_cell_len(c) for c in self.cells])

    @property
    def least(self) -> int:
        return min(self.natural, max(self.flex, len(self.header))) if self.flex else self.natural

    @property
    def narrowest(self) -> int:
        return min(self.natural, max(self.floor, len(self.header))) if self.flex else self.natural


def fit(title: str | None, columns: Sequence[Column], width: int) -> Any:
    """A rich Table of `columns` no wider than `width`: a narrower gap first, then droppable columns go, then flexible ones shrink."""
    from rich import box
    from rich.table import Table

    shown = list(columns)
    gap = next((g for g in GAPS if _least(shown, g) <= width), GAPS[-1])
    for fits, level in ((_least, CHEAP), (_narrowest, 1)):
        while fits(shown, gap) > width and any(c.drop >= level for c in shown):
            worst = max(c.drop for c in shown)
            shown = [c for c in shown if c.drop != worst]
    spare = width - sum(c.natural for c in shown) - gap * (len(shown) - 1)
    widths = {id(c): c.natural for c in shown}
    # What would be dropped first is cut first (the output path before the job's name), the widest first among
    # equals; each down to its preferred least width, then, if that is not enough, to its narrowest.
    for limit in ("least", "narrowest"):
        for c in sorted((c for c in shown if c.flex), key=lambda c: (-c.drop, -c.natural)):
            if spare >= 0:
                break
            cut = min(widths[id(c)] - getattr(c, limit), -spare)
            widths[id(c)] -= cut
            spare += cut
    # SIMPLE_HEAD's column divider is one space; padding on the right of each column makes up the rest of the gap.
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, gap - 1, 0, 0), show_edge=False, expand=False)
    for c in shown:
        table.add_column(c.header, justify=c.justify, no_wrap=True, overflow="ellipsis", width=widths[id(c)],  # type: ignore[arg-type]
                         style=c.style)
    for row in zip(*(c.cells for c in shown)):
        table.add_row(*row)
    return table


def _least(columns: Sequence[Column], gap: int = GAPS[0]) -> int:
    return sum(c.least for c in columns) + gap * (len(columns) - 1)


def _narrowest(columns: Sequence[Column], gap: int = GAPS[0]) -> int:
    return sum(c.narrowest for c in columns) + gap * (len(columns) - 1)


def _cell_len(cell: Any) -> int:
    from rich.cells import cell_len

    return cell_len(cell.plain if hasattr(cell, "plain") else str(cell))


# -- numbers -----------------------------------------------------------------------


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def rate_text(job: dict[str, Any]) -> str:
    """A job's moving rate; blank once it has ended (it makes nothing any more)."""
    return "" if job["state"] in FINISHED else f"{job['rate_per_min']:.1f}"


def eta_text(job: dict[str, Any]) -> str:
    return "" if job["state"] in FINISHED else fmt_seconds(job.get("eta_s"))


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


def cooling(worker: dict[str, Any], now: float) -> str:
    """Time left until the worker's account may send again, or until it restarts; blank when neither."""
    until = worker.get("cooling_until") or (worker.get("account") or {}).get("cooling_until") or worker.get("restart_at")
    return "" if not until or until <= now else f"{until - now:.0f} s"


def last_error_text(worker: dict[str, Any], now: float) -> str:
    """The worker's last error with its age, so an old one is not taken for news."""
    error = worker.get("last_error")
    if not error:
        return ""
    at = worker.get("last_error_at")
    return f"{ago(now - at)}: {error}" if at else error


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


# -- the tables ----------------------------------------------------------------------


def state_text(state: str) -> Any:
    from rich.text import Text

    return Text(state, style=STATE_STYLES.get(state.split(":")[0], ""))


def browser_cell(worker: dict[str, Any]) -> str:
    """local, or a remote browser's host (never its secret), its connection and how often it was attached again."""
    browser = worker.get("browser") or {}
    if browser.get("kind") != "remote":
        return browser.get("kind") or "local"
    again = f", {browser['reconnects']} reconnects" if browser.get("reconnects") else ""
    return f"{browser.get('endpoint')} ({browser.get('connection')}{again})"


def bar(job: dict[str, Any], width: int) -> Any:
    from rich.text import Text

    text = Text()
    for (_name, char, style), share in zip(SEGMENTS, segment_widths(job, width)):
        text.append(char * share, style=style)
    pct = 100 * (job["done"] + job["failed"] + job.get("cancelled", 0)) / max(job["total"], 1)
    text.append(f" {pct:3.0f}%")
    return text


def jobs_table(jobs: list[dict[str, Any]], width: int, *, title: str | None = "jobs", out: bool = False) -> Any:
    """Each job with its progress bar and counts (cancelled when any), rate and ETA; `out` adds the output directory."""
    from rich.text import Text

    if not jobs:
        return Text("no jobs", style="dim")
    cancelled = any(j.get("cancelled") for j in jobs)
    for bar_width in (30, 20, 12, 8):  # a narrower bar before any column goes
        # Text, not markup strings, for anything a user wrote: a name like "[red]x" must print as itself.
        columns = [
            # The id first: it is what commands take, so a short terminal cuts the name instead.
            Column("job", [Text.assemble((j["id"], "dim"), " ", printable(j["name"])) for j in jobs], flex=16, floor=8),
            Column("state", [state_text(j["state"]) for j in jobs]),
            Column("progress", [bar(j, bar_width) for j in jobs]),
            Column("done", [f"{j['done']}/{j['total']}" for j in jobs], "right"),
            Column("failed", [Text(str(j["failed"]), style="red" if j["failed"] else "") for j in jobs], "right"),
            *([Column("cancelled", [str(j.get("cancelled", 0)) for j in jobs], "right", drop=2)] if cancelled else []),
            Column("running", [str(j["running"]) for j in jobs], "right", drop=3),
            Column("pending", [str(j["pending"]) for j in jobs], "right", drop=3),
            Column("rate/min", [rate_text(j) for j in jobs], "right"),
            Column("eta", [eta_text(j) for j in jobs], "right"),
            *([Column("out", [printable(j["out"]) for j in jobs], flex=12, drop=4)] if out else []),
        ]
        if _least(columns) <= width:
            break
    return fit(title, columns, width)


def workers_table(workers: list[dict[str, Any]], width: int, now: float | None = None, *,
                  title: str | None = "workers", errors: bool = False) -> Any:
    """The workers: state, health (and cooling), the prompt at hand, tasks done, memory, restarts.

    `errors` (status, workers) adds each worker's last error with its age; the live view has the events for that.
    """
    from rich.text import Text

    if not workers:
        return Text("no workers", style="dim")
    now = time.time() if now is None else now
    narrow = width < 120

    def health(w: dict[str, Any]) -> Any:
        text = printable(w.get("health") or "")
        left = cooling(w, now)
        if narrow and left and not text.startswith("restarting"):
            text = f"{text}, cooling {left}" if text and text != "ok" else f"cooling {left}"
        return Text(text, style="green" if text == "ok" else "yellow")

    columns = [
        Column("id", [str(w["id"]) for w in workers], "right"),
        Column("state", [state_text(w["state"]) for w in workers]),
        Column("health", [health(w) for w in workers], flex=12),
        Column("current prompt", [Text(printable((w.get("current_prompt") or "").replace("\n", " "))) for w in workers],
               flex=14),
        *([Column("last error", [Text(printable(last_error_text(w, now)), style="dim") for w in workers], flex=16, drop=1)]
          if errors and any(w.get("last_error") for w in workers) else []),
        Column("account", [Text(printable((w.get("account") or {}).get("name") or "")) for w in workers], flex=8, drop=2),
        *([Column("browser", [Text(printable(browser_cell(w))) for w in workers], flex=12, drop=1)]
          if any((w.get("browser") or {}).get("kind") == "remote" for w in workers) else []),
        Column("done", [str(w["tasks_done"]) for w in workers], "right"),
        Column("memory", [f"{w['rss_mb']:.0f} MB" for w in workers], "right"),
        Column("profile", [profile_cell(w) for w in workers], "right", drop=2),
        Column("restarts", [str(w["restarts"]) for w in workers], "right", drop=2),
        *([] if narrow else [Column("cooling", [cooling(w, now) for w in workers], "right")]),
    ]
    return fit(title, columns, width)


def profile_cell(worker: dict[str, Any]) -> str:
    """The size of a worker's browser profile on disk; a dash for a remote browser or one not measured yet."""
    size = worker.get("profile_mb")
    return "-" if size is None else f"{size:.0f} MB"


def memory_bar(memory: dict[str, Any], workers: list[dict[str, Any]], width: int) -> Any:
    """Memory used against the limit the governor holds the fleet to; the details only when they fit."""
    from rich.text import Text

    limit = memory.get("limit_mb") or memory["total_mb"]
    share = min(1.0, memory["used_mb"] / max(limit, 1))
    bar_width = 30 if width >= 120 else 12
    filled = round(share * bar_width)
    style = "green" if share < 0.7 else "yellow" if share < 0.9 else "red"
    text = Text("memory  ", style="bold")
    text.append("█" * filled, style=style)
    text.append("░" * (bar_width - filled), style="grey50")
    source = memory.get("source") or "machine"
    under = "" if source == "machine" else f" ({source.split(' /')[0]} limit)"
    text.append(f"  {memory['used_mb'] / 1024:.1f} of {limit / 1024:.1f} GiB ({share * 100:.0f} %){under}")
    if memory.get("holding"):
        text.append("; new work held", style="yellow")
    workers_mb = sum(w.get("rss_mb") or 0 for w in workers)
    details = f"; daemon {memory['daemon_rss_mb']:.0f} MB, workers {workers_mb:.0f} MB"
    if len(text) + len(details) <= width:
        text.append(details)
    return text
