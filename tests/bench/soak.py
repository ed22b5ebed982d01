"""Soak: a compressed day of unattended operation, with injected faults, watching for anything that grows.

Run: .venv/bin/python tests/bench/soak.py [--minutes 30] [--workers 2] [--out DIR] [--trace-frames 5] [--json soak.json]
(the PNG needs matplotlib: pip install -e '.[bench]')

One real tabfleetd, started with --detach (rotating log file, pid file) on the
demo site, gets many small jobs for --minutes.  The run stands for 24 hours:
retention is one compressed hour, housekeeping runs every 15 compressed
minutes (compacting the store whenever it is mostly free), and the log
rotates at 100 KiB.  Faults are injected throughout:

  * site faults: 5% errors, 1% hangs, 0.5% renderer lockups, a poison prompt
    ([[error]]) in 30% of the jobs, a rate limit (8 per 5 s) on 20% of them;
  * a random Chromium browser process is killed with SIGKILL every --kill-browser-s;
  * a random worker process is killed with SIGKILL every --kill-worker-s.

Every --sample-s it records the daemon's RSS, open files and threads; the
workers' count and RSS; the Chromium process count and RSS; zombies (those
still there 3 s after they are seen: a kill just before a sample leaves
some for the moment reaping takes); the LMDB file size; the sizes of the
log and browser profile directories (all workers' together and the largest one's); the jobs the store still holds;
the events it holds, when the status reply says (`events_stored`); and, with
tracemalloc on in the daemon (--trace-frames, default 5; 0: off), the traced
size and the allocation sites that grew most since the last sample (the
`memory_growth` op).  The series go to OUT/soak.csv, the growth sites to
OUT/soak-sites.csv, and a PNG with one panel per series to OUT/soak.png.

At the end it prints each series with its growth per hour, fitted by least
squares after a warm-up (--warmup, the first 20% of the run) and over the
last half (bounded caches may still be filling), its drift (the mean of
the last quarter against the mean of the quarter after the warm-up), and,
for the series with a goal, whether the goal is met: daemon RSS < 1 MB/h,
profiles < 1 MB/h per worker, zombies 0, open files and threads flat (their
fitted change over the measured span within the noise).  Tracing costs
memory itself (trace_overhead_mb); run with --trace-frames 0 for the clean
RSS figure.  It then shuts the daemon down with `tabfleetctl shutdown --wait`
and checks that no process is left.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tabfleetctl.client import Client, DaemonError, DaemonNotRunning
from tabfleetd.fleet.profiletrim import tree_bytes  # files that vanish mid-walk (Chromium deletes as it goes) count 0

VOCABULARY = [f"{adj} {noun} {place}" for adj in ("a red", "a tiny", "an old", "a glass", "a paper", "a sleepy")
              for noun in ("fox", "boat", "lamp", "tower", "whale", "kite", "robot", "tree")
              for place in ("at dawn", "in snow", "on the moon", "under water", "in a city")]  # 240 prompts
# [[ratelimit]] is left out: its fixed 60 s wait would idle a compressed day; the rate_limit knob stands in.
POISON = ("[[error]] broken prompt",)
FINISHED = ("done", "failed", "cancelled")
WARMUP_SHARE = 0.2  # default of --warmup
ZOMBIE_GRACE_S = 3.0  # a zombie counts when it is still one this long after it is seen (reaping takes up to 2 s)
TOP_SITES = 10  # growth sites asked for at each sample


@dataclass
class Sample:
    t: float
    daemon_rss_mb: float
    daemon_fds: int
    daemon_threads: int
    workers: int
    workers_rss_mb: float
    chromium_procs: int
    chromium_rss_mb: float
    zombies: int
    store_mb: float
    logs_mb: float
    profiles_mb: float  # Chromium caches and crash reports live here; all workers' profiles together
    profile_max_mb: float  # the largest single worker profile
    jobs_in_store: int
    events_stored: int | None  # the status reply's events_stored, when the daemon keeps events in the store
    traced_mb: float | None  # tracemalloc's traced size in the daemon, when tracing
    trace_overhead_mb: float | None  # what tracemalloc itself holds (part of daemon_rss_mb)


# Goals after warm-up: name -> (description, check(per_hour, flat, values after warm-up, workers)).
GOALS: dict[str, tuple[str, Any]] = {
    "daemon_rss_mb": ("< 1 MB/h", lambda per_h, flat, vals, workers: per_h < 1.0),
    "profile_max_mb": ("< 1 MB/h (largest profile)", lambda per_h, flat, vals, workers: per_h < 1.0),
    "profiles_mb": ("< 1 MB/h per worker", lambda per_h, flat, vals, workers: per_h / max(1, workers) < 1.0),
    "zombies": ("0", lambda per_h, flat, vals, workers: max(vals) == 0),
    "daemon_fds": ("flat", lambda per_h, flat, vals, workers: flat),
    "daemon_threads": ("flat", lambda per_h, flat, vals, workers: flat),
}


@dataclass
class Tally:
    jobs_submitted: int = 0
    jobs_finished: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    browsers_killed: int = 0
    workers_killed: int = 0
    seen: dict[str, str] = field(default_factory=dict)  # job -> out dir, until it ends


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="tf-soak-"))
        self.socket = self.root / "s.sock"
        self.state = self.root / "state"
        self.work = self.root / "work"
        self.work.mkdir()
        self.pidfile = self.root / "tabfleetd.pid"
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.samples: list[Sample] = []
        self.sites: list[dict[str, Any]] = []  # growth sites: one row per site per sample
        self.pid = 0
        day_s = args.minutes * 60
        compressed_hour_s = day_s / 24
        self.config = {
            "job_retention_h": compressed_hour_s / 3600,
            "housekeeping_interval_s": max(5.0, compressed_hour_s / 4),
            # compact_min_mb 0: compact on every pass that finds the (small) store mostly free, to exercise it under load.
            "compact_min_mb": 0, "compact_free_ratio": 0.5,
            "log_max_mb": 0.1, "log_backups": 3,
            "task_deadline_s": 15.0, "heartbeat_timeout_s": 10.0, "max_attempts": 4,
            "retry_base_s": 0.5, "retry_cap_s": 5.0, "grace_s": 3.0,
        }
        if args.trace_frames:  # left out when off, so that the soak also runs an older tabfleetd
            self.config["trace_memory_frames"] = args.trace_frames

    # -- the daemon --------------------------------------------------------------

    def start(self) -> None:
        config = self.root / "tabfleetd.toml"
        config.write_text("".join(f"{k} = {v!r}\n" for k, v in self.config.items()))
        result = subprocess.run([sys.executable, "-m", "tabfleetd", "--detach", "--pidfile", str(self.pidfile),
                                 "--socket", str(self.socket), "--state-dir", str(self.state), "--config", str(config),
                                 "--workers", str(self.args.workers)], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise SystemExit(f"tabfleetd --detach failed ({result.returncode}):\n{result.stderr}")
        self.pid = int(self.pidfile.read_text())
        deadline = time.monotonic() + 60
        while sum(w["state"] == "idle" for w in self.call("workers")["workers"]) < self.args.workers:
            if time.monotonic() > deadline:
                raise SystemExit("workers did not start within 60 s")
            time.sleep(0.2)

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        with Client(self.socket, 60) as client:
            return client.call(op, args)

    def stop(self) -> list[int]:
        result = subprocess.run([sys.executable, "-m", "tabfleetctl", "--socket", str(self.socket), "shutdown", "--wait"],
                                capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            print(f"shutdown failed: {result.stderr}", file=sys.stderr)
        time.sleep(2)
        return [p.pid for p in self.processes() if p.pid != os.getpid()]

    # -- the work --------------------------------------------------------------------

    def submit(self) -> None:
        prompts = self.rng.sample(VOCABULARY, self.args.tasks_per_job)
        if self.rng.random() < 0.3:
            prompts[-1] = self.rng.choice(POISON)
        knobs = {"latency": "0.3", "jitter": "0.2", "error_rate": "0.05", "hang_rate": "0.01", "lockup_rate": "0.005"}
        if self.rng.random() < 0.2:
            knobs["rate_limit"] = "8/5"  # "try again in a few seconds" for part of the job
        result = self.call("submit", {"filename": "soak.txt", "data": "\n".join(prompts).encode(), "cwd": str(self.work),
                                      "name": f"soak-{self.tally.jobs_submitted}", "knobs": knobs})
        self.tally.jobs_submitted += 1
        self.tally.seen[result["job"]] = result["out"]

    def collect_finished(self) -> int:
        """Count finished jobs and delete their images, as an operator collecting results would."""
        jobs = {j["id"]: j for j in self.call("status")["jobs"]}
        active = 0
        for job_id, out in list(self.tally.seen.items()):
            job = jobs.get(job_id)
            if job is None or job["state"] in FINISHED:
                if job is not None:
                    self.tally.tasks_done += job["done"]
                    self.tally.tasks_failed += job["failed"]
                self.tally.jobs_finished += 1
                del self.tally.seen[job_id]
                shutil.rmtree(out, ignore_errors=True)
            else:
                active += 1
        return active

    # -- faults ------------------------------------------------------------------------

    def processes(self) -> list[psutil.Process]:
        """The daemon's whole tree plus anything naming the state dir (Chromium escapes its worker's group)."""
        found: dict[int, psutil.Process] = {}
        try:
            daemon = psutil.Process(self.pid)
            found[daemon.pid] = daemon
            found.update((c.pid, c) for c in daemon.children(recursive=True))
        except psutil.Error:
            pass
        mark = str(self.state)
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(mark in a for a in proc.info["cmdline"] or []):
                    found[proc.pid] = proc
            except psutil.Error:
                continue
        return list(found.values())

    def chromium(self) -> list[psutil.Process]:
        profiles = str(self.state / "profiles")
        out = []
        for proc in self.processes():
            try:
                if any(profiles in a for a in proc.cmdline()):
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    def kill_browser(self) -> None:
        browsers = [p for p in self.chromium() if not any(a.startswith("--type=") for a in self._cmdline(p))
                    and "crashpad" not in p.name()]
        if browsers:
            self._kill(self.rng.choice(browsers))
            self.tally.browsers_killed += 1

    def kill_worker(self) -> None:
        workers = self._workers()
        if workers:
            self._kill(self.rng.choice(workers))
            self.tally.workers_killed += 1

    def _workers(self) -> list[psutil.Process]:
        """The daemon's worker processes (not multiprocessing's resource tracker)."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        return [p for p in children if "spawn_main" in " ".join(self._cmdline(p))]

    @staticmethod
    def _cmdline(proc: psutil.Process) -> list[str]:
        try:
            return proc.cmdline()
        except psutil.Error:
            return []

    @staticmethod
    def _kill(proc: psutil.Process) -> None:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass

    # -- measuring -----------------------------------------------------------------------

    def memory_growth(self, t: float | None) -> dict[str, Any]:
        """The daemon's traced size and its top growth sites since the last call, kept as rows at time t (None: discard)."""
        if not self.args.trace_frames:
            return {}
        reply = self.call("memory_growth", {"top": TOP_SITES})
        if t is not None:
            for rank, site in enumerate(reply.get("sites", []), 1):
                self.sites.append({"t": t, "rank": rank, "where": site["where"], "growth_kib": site["growth_kib"],
                                   "size_kib": site["size_kib"], "count": site["count"],
                                   "stack": " < ".join(site["stack"])})
        return reply

    def lasting_zombies(self) -> list[int]:
        """The zombies among our processes that are still zombies ZOMBIE_GRACE_S later.

        A kill just before a sample leaves zombies for the moment their reaper takes (its SIGCHLD, or its 2 s
        sweep); a zombie that outlasts that is one nobody reaps.
        """
        def zombies(procs: list[psutil.Process]) -> list[psutil.Process]:
            found = []
            for proc in procs:
                try:
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        found.append(proc)
                except psutil.Error:
                    pass
            return found

        seen = zombies(list(self.processes()))
        if seen:
            time.sleep(ZOMBIE_GRACE_S)
            seen = zombies(seen)  # psutil reads the status afresh each call
        return [proc.pid for proc in seen]

    def sample(self, t0: float) -> Sample:
        t = round(time.monotonic() - t0, 1)
        status = self.call("status")
        traced = self.memory_growth(t)
        daemon = psutil.Process(self.pid)
        with daemon.oneshot():
            rss, fds, threads = daemon.memory_info().rss, daemon.num_fds(), daemon.num_threads()
        workers = self._workers()
        chromium = self.chromium()
        zombies = len(self.lasting_zombies())
        profiles = self.state / "profiles"
        profile_sizes = [tree_bytes(p) for p in profiles.iterdir() if p.is_dir()] if profiles.is_dir() else []
        return Sample(
            t=t, daemon_rss_mb=round(rss / 2**20, 1), daemon_fds=fds, daemon_threads=threads,
            workers=len(workers), workers_rss_mb=round(_rss(workers), 1), chromium_procs=len(chromium),
            chromium_rss_mb=round(_rss(chromium), 1), zombies=zombies,
            store_mb=round(tree_bytes(self.state / "store") / 2**20, 2), logs_mb=round(tree_bytes(self.state / "logs") / 2**20, 2),
            profiles_mb=round(sum(profile_sizes) / 2**20, 1), profile_max_mb=round(max(profile_sizes, default=0) / 2**20, 1),
            jobs_in_store=len(status["jobs"]), events_stored=status.get("events_stored"),
            traced_mb=traced.get("traced_mb"), trace_overhead_mb=traced.get("overhead_mb"))

    def run(self) -> dict[str, Any]:
        args = self.args
        self.start()
        self.memory_growth(None)  # the baseline snapshot: growth is counted from here
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_sample = next_browser_kill = next_worker_kill = t0
        next_browser_kill += args.kill_browser_s
        next_worker_kill += args.kill_worker_s
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                try:
                    active = self.collect_finished()
                    if active < args.max_active_jobs:
                        self.submit()
                    if now >= next_browser_kill:
                        self.kill_browser()
                        next_browser_kill = now + args.kill_browser_s
                    if now >= next_worker_kill:
                        self.kill_worker()
                        next_worker_kill = now + args.kill_worker_s
                    if now >= next_sample:
                        s = self.sample(t0)
                        self.samples.append(s)
                        print(_row(s), flush=True)
                        self.save_so_far()
                        next_sample = now + args.sample_s
                except (DaemonNotRunning, DaemonError) as exc:
                    raise SystemExit(f"the daemon stopped answering: {exc}; see {self.state / 'logs'}") from None
                time.sleep(1.0)
            self.samples.append(self.sample(t0))
            print(_row(self.samples[-1]), flush=True)
        finally:
            left = self.stop()
        return self.report(left)

    def save_so_far(self) -> None:
        """Write the series, the growth sites and the tally as they stand, so a long run can be read (--report-from) before it ends."""
        write_csv(self.args.csv, [vars(s) for s in self.samples])
        write_csv(self.args.csv.with_name(self.args.csv.stem + "-sites.csv"), self.sites)
        tally = {k: v for k, v in vars(self.tally).items() if k != "seen"}
        self.args.csv.with_name(self.args.csv.stem + "-tally.json").write_text(json.dumps(tally))

    def report(self, left: list[int]) -> dict[str, Any]:
        logs = sorted((self.state / "logs").glob("tabfleetd.log*"))
        text = "".join(p.read_text(errors="replace") for p in logs)
        tally = {k: v for k, v in vars(self.tally).items() if k != "seen"}
        tally |= {"compactions_in_kept_logs": text.count("store compacted"), "prune_passes_in_kept_logs": text.count("pruned ")}
        return build_report(self.samples, self.sites, self.args, tally) | {
            "log_files": [p.name for p in logs], "left_after_shutdown": left, "state": str(self.state)}


def build_report(samples: list[Sample], sites: list[dict[str, Any]], args: argparse.Namespace,
                 tally: dict[str, Any]) -> dict[str, Any]:
    """Each series' growth per hour after the warm-up and in the last half, with its goal, and the top growth sites."""
    span_h = (samples[-1].t - samples[0].t) / 3600 if len(samples) > 1 else 0
    warm_from = samples[-1].t * args.warmup
    series: dict[str, Any] = {}
    for name in series_names(samples):
        points = [(s.t, getattr(s, name)) for s in samples if getattr(s, name) is not None]
        after = [(t, v) for t, v in points if t >= warm_from]
        if not after:
            continue
        values = [v for _, v in points]
        quarter = max(1, len(after) // 4)
        early, late = statistics.fmean(v for _, v in after[:quarter]), statistics.fmean(v for _, v in after[-quarter:])
        per_hour = _slope([t / 3600 for t, _ in after], [v for _, v in after])
        # Bounded caches (events, pacing logs) may still be filling after the warm-up: the last half shows the end.
        last_half = [(t, v) for t, v in points if t >= samples[-1].t / 2]
        late_per_hour = _slope([t / 3600 for t, _ in last_half], [v for _, v in last_half])
        flat = _flat([t / 3600 for t, _ in after], [v for _, v in after], per_hour)
        entry = {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
                 "median": statistics.median(values), "per_hour": round(per_hour, 2),
                 "late_per_hour": round(late_per_hour, 2), "flat": flat,
                 "drift_pct": round(100 * (late - early) / early, 1) if early else None}
        if name in GOALS:
            goal, check = GOALS[name]
            entry |= {"goal": goal, "met": bool(check(per_hour, flat, [v for _, v in after], args.workers))}
        series[name] = entry
    tally = tally | {"tasks_per_hour": round(tally.get("tasks_done", 0) / span_h) if span_h else 0}
    return {"minutes": args.minutes, "workers": args.workers, "span_h": round(span_h, 3),
            "warmup_s": round(warm_from, 1), "tally": tally, "series": series,
            "top_growth_sites": top_sites([r for r in sites if r["t"] >= warm_from]),
            "log_files": [], "left_after_shutdown": [], "samples": [vars(s) for s in samples]}


def read_so_far(csv_path: Path) -> tuple[list[Sample], list[dict[str, Any]], dict[str, Any]]:
    """The samples, growth sites and tally a run (maybe still going) has written next to csv_path."""
    def number(text: str) -> Any:
        if text == "":
            return None
        value = float(text)
        return int(value) if value.is_integer() and "." not in text else value

    with csv_path.open(newline="") as f:
        samples = [Sample(**{k: number(v) for k, v in row.items()}) for row in csv.DictReader(f)]
    sites_path = csv_path.with_name(csv_path.stem + "-sites.csv")
    sites: list[dict[str, Any]] = []
    if sites_path.exists():
        with sites_path.open(newline="") as f:
            for row in csv.DictReader(f):
                sites.append({**row, **{k: float(row[k]) for k in ("t", "growth_kib", "size_kib")},
                              "rank": int(row["rank"]), "count": int(row["count"])})
    tally_path = csv_path.with_name(csv_path.stem + "-tally.json")
    tally = json.loads(tally_path.read_text()) if tally_path.exists() else {}
    return samples, sites, tally


def series_names(samples: list[Sample]) -> list[str]:
    """The sampled series that have a value at least once (events_stored and the tracing ones are optional)."""
    return [n for n in Sample.__dataclass_fields__ if n != "t" and any(getattr(s, n) is not None for s in samples)]


def top_sites(rows: list[dict[str, Any]], count: int = TOP_SITES) -> list[dict[str, Any]]:
    """Growth summed per site over the samples given, largest first."""
    total: dict[str, dict[str, Any]] = {}
    for row in rows:
        site = total.setdefault(row["where"], {"where": row["where"], "growth_kib": 0.0, "size_kib": 0.0,
                                               "samples": 0, "stack": row["stack"]})
        site["growth_kib"] = round(site["growth_kib"] + row["growth_kib"], 1)
        site["size_kib"] = max(site["size_kib"], row["size_kib"])
        site["samples"] += 1
    return sorted(total.values(), key=lambda s: s["growth_kib"], reverse=True)[:count]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def draw(path: Path, report: dict[str, Any], sites: list[dict[str, Any]]) -> bool:
    """One panel per series (and one for the top growth sites' sizes), warm-up shaded, the fitted line drawn."""
    try:
        import matplotlib
    except ImportError:
        print("no PNG: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples, series = report["samples"], report["series"]
    names = list(series)
    top = [s["where"] for s in report["top_growth_sites"][:5]]
    panels = len(names) + (1 if top else 0)
    cols = 3
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.6 * rows), squeeze=False)
    flat_axes = [ax for row in axes for ax in row]
    warm_min = report["warmup_s"] / 60
    for ax, name in zip(flat_axes, names):
        points = [(s["t"] / 60, s[name]) for s in samples if s[name] is not None]
        ax.plot([t for t, _ in points], [v for _, v in points], marker=".", linewidth=1)
        entry = series[name]
        after = [(t, v) for t, v in points if t >= warm_min]
        if len(after) >= 2:
            mt, mv = statistics.fmean(t for t, _ in after), statistics.fmean(v for _, v in after)
            slope_per_min = entry["per_hour"] / 60
            ax.plot([after[0][0], after[-1][0]], [mv + slope_per_min * (after[0][0] - mt), mv + slope_per_min * (after[-1][0] - mt)],
                    linestyle="--", color="black", linewidth=0.8)
        ax.axvspan(0, warm_min, color="grey", alpha=0.15)
        verdict = "" if "met" not in entry else f"; goal {entry['goal']}: {'met' if entry['met'] else 'NOT MET'}"
        ax.set_title(f"{name}: {entry['per_hour']:+.2f}/h{verdict}", fontsize=9,
                     color="red" if entry.get("met") is False else "black")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("minutes", fontsize=7)
    if top:
        ax = flat_axes[len(names)]
        for where in top:
            size_at: dict[float, float] = {}  # one site may be several stacks (callers): their sizes add up
            for r in sites:
                if r["where"] == where:
                    size_at[r["t"]] = size_at.get(r["t"], 0.0) + r["size_kib"]
            ax.plot([t / 60 for t in size_at], [kib / 1024 for kib in size_at.values()], marker=".", linewidth=1,
                    label=where.rsplit("/", 1)[-1])
        ax.axvspan(0, warm_min, color="grey", alpha=0.15)
        ax.set_title("top growth sites: size (MB) when among the top", fontsize=9)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("minutes", fontsize=7)
    for ax in flat_axes[panels:]:
        ax.axis("off")
    fig.suptitle(f"tabfleet soak: {report['minutes']:g} min standing for 24 h, {report['workers']} workers", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _rss(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs; 0 with fewer than 3 points."""
    if len(xs) < 3 or len(set(xs)) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _flat(xs: list[float], ys: list[float], slope: float) -> bool:
    """The fitted change over the span is within the noise: at most one unit, or the spread of the values about the fit."""
    if len(xs) < 3:
        return True
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    residuals = [y - (my + slope * (x - mx)) for x, y in zip(xs, ys)]
    return abs(slope * (max(xs) - min(xs))) <= max(1.0, 2 * statistics.pstdev(residuals))


def _row(s: Sample) -> str:
    return (f"t={s.t:7.0f}s daemon {s.daemon_rss_mb:6.1f} MB {s.daemon_fds:3d} fds {s.daemon_threads:2d} thr | "
            f"workers {s.workers} {s.workers_rss_mb:6.1f} MB | chromium {s.chromium_procs:2d} procs {s.chromium_rss_mb:7.1f} MB | "
            f"zombies {s.zombies} | store {s.store_mb:5.2f} MB logs {s.logs_mb:5.2f} MB profiles {s.profiles_mb:5.1f} MB "
            f"(max {s.profile_max_mb:4.1f}) jobs {s.jobs_in_store}"
            + ("" if s.events_stored is None else f" events {s.events_stored}")
            + ("" if s.traced_mb is None else f" | traced {s.traced_mb:5.1f} MB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the compressed day (default 30)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks-per-job", type=int, default=12)
    parser.add_argument("--max-active-jobs", type=int, default=4, help="submit only while fewer jobs are unfinished")
    parser.add_argument("--sample-s", type=float, default=None, help="seconds between samples (default: 40 per run)")
    parser.add_argument("--kill-browser-s", type=float, default=45.0)
    parser.add_argument("--kill-worker-s", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--warmup", type=float, default=WARMUP_SHARE,
                        help="share of the run left out of the growth fits (default 0.2)")
    parser.add_argument("--trace-frames", type=int, default=5,
                        help="tracemalloc frames per allocation in the daemon, for the growth sites (0: no tracing)")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory for soak.csv, soak-sites.csv, soak.png")
    parser.add_argument("--csv", type=Path, help="the series as CSV (default OUT/soak.csv)")
    parser.add_argument("--png", type=Path, help="the series drawn, one panel each (default OUT/soak.png)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (state, logs)")
    parser.add_argument("--report-from", type=Path, metavar="DIR",
                        help="run nothing: report and draw what a run (maybe still going) has written to DIR/soak.csv")
    args = parser.parse_args()
    if not 0 <= args.warmup < 1:
        parser.error("--warmup must be at least 0 and less than 1")
    args.out.mkdir(parents=True, exist_ok=True)
    args.csv = args.csv or args.out / "soak.csv"
    args.png = args.png or args.out / "soak.png"
    if args.sample_s is None:
        args.sample_s = max(5.0, args.minutes * 60 / 40)
    sites_csv = args.csv.with_name(args.csv.stem + "-sites.csv")
    if args.report_from:
        samples, sites, tally = read_so_far(args.report_from / "soak.csv")
        if len(samples) < 2:
            parser.error(f"{args.report_from / 'soak.csv'}: fewer than 2 samples")
        report = build_report(samples, sites, args, tally)
        print(f"report from {args.report_from}: {len(samples)} samples over {samples[-1].t / 60:.1f} min "
              f"(--minutes {args.minutes:g} and --workers {args.workers} as given here)")
    else:
        soak = Soak(args)
        print(f"soak: {args.minutes:g} min standing for 24 h, {args.workers} workers, state in {soak.state}", flush=True)
        try:
            report = soak.run()
        finally:
            if not args.keep:
                shutil.rmtree(soak.root, ignore_errors=True)
        write_csv(args.csv, report["samples"])
        write_csv(sites_csv, soak.sites)
        sites = soak.sites
    drawn = draw(args.png, report, sites)
    print(f"\nseries after a {report['warmup_s']:g} s warm-up: first -> last [min, median, max], growth per hour "
          "(least squares; in the last half), drift (last vs first quarter), goal")
    for name, s in report["series"].items():
        drift = "-" if s["drift_pct"] is None else f"{s['drift_pct']:+.1f}%"
        goal = "" if "goal" not in s else f"  goal {s['goal']}: {'met' if s['met'] else 'NOT MET'}"
        print(f"  {name:17s} {s['first']:>9} -> {s['last']:<9} [{s['min']}, {s['median']}, {s['max']}]"
              f"  {s['per_hour']:+.2f}/h ({s['late_per_hour']:+.2f}/h)  {drift}{goal}")
    if report["top_growth_sites"]:
        print("top growth sites after warm-up (tracemalloc, summed over samples):")
        for site in report["top_growth_sites"]:
            print(f"  {site['growth_kib']:+9.1f} KiB (up to {site['size_kib']:.0f} KiB, in top {site['samples']}x)  {site['where']}")
    if "events_stored" not in report["series"]:
        print("events in the store: not shown (the status reply has no events_stored field)")
    print(f"tally: {json.dumps(report['tally'])}")
    print(f"log files: {report['log_files']}")
    print(f"processes left after shutdown: {report['left_after_shutdown'] or 'none'}")
    written = [] if args.report_from else [args.csv, sites_csv]
    print(f"written: {', '.join(map(str, written + ([args.png] if drawn else [])))}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if report["left_after_shutdown"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
