"""Soak: a compressed day of unattended operation, with injected faults, watching for anything that grows.

Run: .venv/bin/python tests/bench/soak.py [--minutes 30] [--workers 2] [--json soak.json]

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
workers' count and RSS; the Chromium process count and RSS; zombies; the
LMDB file size; the sizes of the log and browser profile directories; and
the jobs the store still holds.  At the end it prints each series with its
growth per hour, fitted by least squares after a warm-up (the first 20% of
the run), and its drift: the mean of the last quarter against the mean of
the quarter after the warm-up.  It then shuts the daemon down with
`tabfleetctl shutdown --wait` and checks that no process is left.
"""

from __future__ import annotations

import argparse
import json
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

VOCABULARY = [f"{adj} {noun} {place}" for adj in ("a red", "a tiny", "an old", "a glass", "a paper", "a sleepy")
              for noun in ("fox", "boat", "lamp", "tower", "whale", "kite", "robot", "tree")
              for place in ("at dawn", "in snow", "on the moon", "under water", "in a city")]  # 240 prompts
# [[ratelimit]] is left out: its fixed 60 s wait would idle a compressed day; the rate_limit knob stands in.
POISON = ("[[error]] broken prompt",)
FINISHED = ("done", "failed", "cancelled")
WARMUP_SHARE = 0.2


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
    profiles_mb: float  # Chromium caches and crash reports live here
    jobs_in_store: int


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

    def sample(self, t0: float, jobs_in_store: int) -> Sample:
        daemon = psutil.Process(self.pid)
        with daemon.oneshot():
            rss, fds, threads = daemon.memory_info().rss, daemon.num_fds(), daemon.num_threads()
        workers = self._workers()
        chromium = self.chromium()
        zombies = 0
        for proc in self.processes():
            try:
                zombies += proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                pass
        return Sample(
            t=round(time.monotonic() - t0, 1), daemon_rss_mb=round(rss / 2**20, 1), daemon_fds=fds, daemon_threads=threads,
            workers=len(workers), workers_rss_mb=round(_rss(workers), 1), chromium_procs=len(chromium),
            chromium_rss_mb=round(_rss(chromium), 1), zombies=zombies,
            store_mb=round(_size(self.state / "store") / 2**20, 2), logs_mb=round(_size(self.state / "logs") / 2**20, 2),
            profiles_mb=round(_size(self.state / "profiles") / 2**20, 1), jobs_in_store=jobs_in_store)

    def run(self) -> dict[str, Any]:
        args = self.args
        self.start()
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
                        s = self.sample(t0, len(self.call("status")["jobs"]))
                        self.samples.append(s)
                        print(_row(s), flush=True)
                        next_sample = now + args.sample_s
                except (DaemonNotRunning, DaemonError) as exc:
                    raise SystemExit(f"the daemon stopped answering: {exc}; see {self.state / 'logs'}") from None
                time.sleep(1.0)
            self.samples.append(self.sample(t0, len(self.call("status")["jobs"])))
            print(_row(self.samples[-1]), flush=True)
        finally:
            left = self.stop()
        return self.report(left)

    def report(self, left: list[int]) -> dict[str, Any]:
        span_h = (self.samples[-1].t - self.samples[0].t) / 3600 if len(self.samples) > 1 else 0
        warm = [s for s in self.samples if s.t >= self.samples[-1].t * WARMUP_SHARE]
        series: dict[str, Any] = {}
        for name in Sample.__dataclass_fields__:
            if name == "t":
                continue
            values = [getattr(s, name) for s in self.samples]
            quarter = max(1, len(warm) // 4)
            early, late = statistics.fmean(getattr(s, name) for s in warm[:quarter]), \
                statistics.fmean(getattr(s, name) for s in warm[-quarter:])
            series[name] = {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
                            "median": statistics.median(values),
                            "per_hour": round(_slope([s.t / 3600 for s in warm], [getattr(s, name) for s in warm]), 2),
                            "drift_pct": round(100 * (late - early) / early, 1) if early else None}
        logs = sorted((self.state / "logs").glob("tabfleetd.log*"))
        text = "".join(p.read_text(errors="replace") for p in logs)
        tally = {k: v for k, v in vars(self.tally).items() if k != "seen"}
        tally |= {"compactions_in_kept_logs": text.count("store compacted"), "prune_passes_in_kept_logs": text.count("pruned "),
                  "tasks_per_hour": round(self.tally.tasks_done / span_h) if span_h else 0}
        return {"minutes": self.args.minutes, "workers": self.args.workers, "span_h": round(span_h, 3),
                "tally": tally, "series": series, "log_files": [p.name for p in logs],
                "left_after_shutdown": left, "state": str(self.state), "samples": [vars(s) for s in self.samples]}


def _rss(procs: list[psutil.Process]) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs; 0 with fewer than 3 points."""
    if len(xs) < 3 or len(set(xs)) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _row(s: Sample) -> str:
    return (f"t={s.t:7.0f}s daemon {s.daemon_rss_mb:6.1f} MB {s.daemon_fds:3d} fds {s.daemon_threads:2d} thr | "
            f"workers {s.workers} {s.workers_rss_mb:6.1f} MB | chromium {s.chromium_procs:2d} procs {s.chromium_rss_mb:7.1f} MB | "
            f"zombies {s.zombies} | store {s.store_mb:5.2f} MB logs {s.logs_mb:5.2f} MB profiles {s.profiles_mb:5.1f} MB "
            f"jobs {s.jobs_in_store}")


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
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (state, logs)")
    args = parser.parse_args()
    if args.sample_s is None:
        args.sample_s = max(5.0, args.minutes * 60 / 40)
    soak = Soak(args)
    print(f"soak: {args.minutes:g} min standing for 24 h, {args.workers} workers, state in {soak.state}", flush=True)
    try:
        report = soak.run()
    finally:
        if not args.keep:
            shutil.rmtree(soak.root, ignore_errors=True)
    print("\nseries: first -> last [min, median, max], growth per hour after warm-up, drift (last vs first quarter)")
    for name, s in report["series"].items():
        drift = "-" if s["drift_pct"] is None else f"{s['drift_pct']:+.1f}%"
        print(f"  {name:16s} {s['first']:>9} -> {s['last']:<9} [{s['min']}, {s['median']}, {s['max']}]"
              f"  {s['per_hour']:+.2f}/h  {drift}")
    print(f"tally: {json.dumps(report['tally'])}")
    print(f"log files: {report['log_files']}")
    print(f"processes left after shutdown: {report['left_after_shutdown'] or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if report["left_after_shutdown"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
