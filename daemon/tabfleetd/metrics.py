"""Prometheus metrics: a collector that reads the daemon's live state at scrape time.

Nothing polls in the background.  Gauges (jobs, tasks, workers, memory) are
read from the scheduler's and fleet's in-memory state when Prometheus
scrapes; counters (attempts, failures) are kept by an event listener, so they
count from the daemon's start, as Prometheus counters do.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psutil
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from . import __version__
from .states import BUCKETS, FINISHED_JOB_STATES, JobState

if TYPE_CHECKING:
    from .app import Daemon

log = logging.getLogger(__name__)

_FINISHED = frozenset(s.value for s in FINISHED_JOB_STATES)
MB = 2**20


class FleetCollector(Collector):
    """Every tabfleet_* metric, built fresh at each scrape."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.attempts: collections.Counter[str] = collections.Counter()  # outcome -> attempts ended so
        self.failures: collections.Counter[str] = collections.Counter()  # error class -> failed attempts
        self.finished: collections.Counter[str] = collections.Counter()  # done|failed -> tasks that ended so
        # States seen once stay listed at 0, so a series does not vanish when no worker is in that state.
        self.worker_states: set[str] = {"starting", "idle", "busy", "dead"}
        daemon.events.listen(self.on_event)

    def close(self) -> None:
        self.daemon.events.unlisten(self.on_event)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "task_done":
            self.finished["done"] += 1
            if not event.get("adopted"):  # an adopted image was made by an attempt counted before
                self.attempts["done"] += 1
        elif kind in ("task_retry", "task_failed"):
            self.attempts["retry" if kind == "task_retry" else "failed"] += 1
            self.failures[str(event.get("error_kind") or "unknown")] += 1
            if kind == "task_failed":
                self.finished["failed"] += 1

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._counters()
        yield from self._workers()
        yield from self._memory()
        yield from self._pacing()
        yield from self._browsers_and_accounts()
        info = InfoMetricFamily("tabfleet", "The running tabfleetd.")
        info.add_metric([], {"version": __version__})
        yield info

    def _jobs(self) -> Iterator[Metric]:
        jobs = list(self.daemon.scheduler.jobs.values())
        by_state = GaugeMetricFamily("tabfleet_jobs", "Jobs known to the daemon, by state.", labels=["state"])
        counts = collections.Counter(j["state"] for j in jobs)
        for state in JobState:
            by_state.add_metric([state.value], counts[state.value])
        yield by_state
        tasks = GaugeMetricFamily("tabfleet_tasks", "Tasks of all jobs, by state (retry_wait counts as pending).",
                                  labels=["state"])
        for bucket in BUCKETS:
            tasks.add_metric([bucket], sum(j["counts"].get(bucket, 0) for j in jobs))
        yield tasks
        # Per-job series only for jobs still going: a daemon's job history would otherwise grow the series for ever.
        job_tasks = GaugeMetricFamily("tabfleet_job_tasks", "Tasks of each unfinished job, by state.",
                                      labels=["job", "name", "state"])
        job_rate = GaugeMetricFamily("tabfleet_job_rate_per_minute", "Moving completion rate of each unfinished job.",
                                     labels=["job", "name"])
        for job in jobs:
            if job["state"] in _FINISHED:
                continue
            for bucket in BUCKETS:
                job_tasks.add_metric([job["id"], job["name"], bucket], job["counts"].get(bucket, 0))
            job_rate.add_metric([job["id"], job["name"]], self.daemon.scheduler.rate_per_min(job["id"]))
        yield job_tasks
        yield job_rate

    def _counters(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily("tabfleet_task_attempts", "Task attempts that ended, by outcome, since start.",
                                       labels=["outcome"])
        for outcome in ("done", "retry", "failed"):
            attempts.add_metric([outcome], self.attempts[outcome])
        yield attempts
        failures = CounterMetricFamily("tabfleet_task_failures", "Failed task attempts by error class, since start.",
                                       labels=["class"])
        for cls, n in sorted(self.failures.items()):
            failures.add_metric([cls], n)
        yield failures
        finished = CounterMetricFamily("tabfleet_tasks_finished", "Tasks that ended done or failed, since start.",
                                       labels=["outcome"])
        for outcome in ("done", "failed"):
            finished.add_metric([outcome], self.finished[outcome])
        yield finished
        dropped = CounterMetricFamily("tabfleet_events_dropped", "Events a slow subscriber lost, since start.")
        dropped.add_metric([], self.daemon.events.dropped)
        yield dropped
        # Open streams and connections: both return to zero when clients leave, or something leaks.
        subscriptions = GaugeMetricFamily("tabfleet_subscriptions", "Open event subscriptions (watch, events -f).")
        subscriptions.add_metric([], len(self.daemon.events.subscribers))
        yield subscriptions
        connections = GaugeMetricFamily("tabfleet_control_connections", "Open control socket connections.")
        connections.add_metric([], len(self.daemon.server.connections))
        yield connections

    def _workers(self) -> Iterator[Metric]:
        handles = sorted(self.daemon.fleet.workers.values(), key=lambda h: h.wid)
        self.worker_states.update(h.state for h in handles)
        states = collections.Counter(h.state for h in handles)
        workers = GaugeMetricFamily("tabfleet_workers", "Worker processes, by state.", labels=["state"])
        for state in sorted(self.worker_states):
            workers.add_metric([state], states[state])
        yield workers
        restarts = CounterMetricFamily("tabfleet_worker_restarts", "Times each worker was started again.", labels=["worker"])
        done = CounterMetricFamily("tabfleet_worker_tasks_done", "Tasks each worker finished, since start.", labels=["worker"])
        rss = GaugeMetricFamily("tabfleet_worker_memory_bytes", "Memory of each worker with its Chromium, as last reported.",
                                labels=["worker"])
        for h in handles:
            wid = str(h.wid)
            restarts.add_metric([wid], h.restarts)
            done.add_metric([wid], h.tasks_done)
            rss.add_metric([wid], h.rss_mb * MB)
        yield restarts
        yield done
        yield rss

    def _memory(self) -> Iterator[Metric]:
        vm = psutil.virtual_memory()
        total = GaugeMetricFamily("tabfleet_memory_total_bytes", "Memory of the machine.")
        total.add_metric([], vm.total)
        yield total
        # The governor's last reading (the cgroup's, when the daemon has a limit) is what the fleet is held to.
        view_of = getattr(self.daemon.fleet, "memory_view", None)
        governed = view_of() if view_of is not None else {}
        used = GaugeMetricFamily("tabfleet_memory_used_bytes",
                                 "Memory in use as the governor reads it (cgroup or machine, less reclaimable cache).")
        used.add_metric([], governed["used_mb"] * MB if governed.get("used_mb") is not None else vm.total - vm.available)
        yield used
        limit = GaugeMetricFamily("tabfleet_memory_limit_bytes", "The memory the fleet is held under (cgroup limit, else the machine).")
        limit.add_metric([], governed["limit_mb"] * MB if governed.get("limit_mb") is not None else vm.total)
        yield limit
        if governed.get("target_workers") is not None:
            target = GaugeMetricFamily("tabfleet_workers_target", "Workers the fleet aims for now (the governor may hold it lower).")
            target.add_metric([], governed["target_workers"])
            yield target


    def _pacing(self) -> Iterator[Metric]:
        """What pacing learned of each site and account, and what waits for a site or an output."""
        now = time.time()
        view = self.daemon.scheduler.pacing_view(now)
        pace = GaugeMetricFamily("tabfleet_site_pace_per_minute",
                                 "Prompts per minute each site is paced at (learned or configured); absent: no limit known.",
                                 labels=["site"])
        answers = CounterMetricFamily("tabfleet_site_rate_limit_answers", "Rate-limit answers each site gave.", labels=["site"])
        signals = CounterMetricFamily("tabfleet_site_congestion_signals",
                                      "Congestion signals of each site (rate-limit answers within one window count once).",
                                      labels=["site"])
        deadline = GaugeMetricFamily("tabfleet_site_answer_deadline_seconds",
                                     "How long a worker waits for each site's answer now (learned from its answer times).",
                                     labels=["site"])
        unreachable = GaugeMetricFamily("tabfleet_site_unreachable", "1 while a site cannot be reached and its tasks wait.",
                                        labels=["site"])
        for site, s in sorted(view["sites"].items()):
            if s.get("rate_per_min") is not None:
                pace.add_metric([site], s["rate_per_min"])
            answers.add_metric([site], s.get("rate_limit_hits", 0))
            signals.add_metric([site], s.get("signals", 0))
            if s.get("answer_deadline_s") is not None:
                deadline.add_metric([site], s["answer_deadline_s"])
            unreachable.add_metric([site], 1 if s.get("unreachable") else 0)
        yield from (pace, answers, signals, deadline, unreachable)
        cooling = GaugeMetricFamily("tabfleet_account_cooling_seconds", "Seconds each account still has to cool down.",
                                    labels=["account"])
        for account in sorted({h.account for h in self.daemon.fleet.workers.values()}):  # workers may share one
            cooling.add_metric([account], self.daemon.limits.cooling(account, now))
        yield cooling
        waiting = GaugeMetricFamily("tabfleet_jobs_waiting_for_output", "Jobs waiting for room in their output directory.")
        waiting.add_metric([], len(self.daemon.scheduler.disk.waiting))
        yield waiting


    def _browsers_and_accounts(self) -> Iterator[Metric]:
        """Each worker's browser (kind, host, connection; never a secret) and each account's sign-in state."""
        handles = sorted(self.daemon.fleet.workers.values(), key=lambda h: h.wid)
        browser = GaugeMetricFamily("tabfleet_worker_browser", "1 for each worker's browser: its kind, endpoint host and "
                                    "connection state.", labels=["worker", "kind", "endpoint", "connection"])
        reconnects = CounterMetricFamily("tabfleet_worker_browser_reconnects",
                                         "Times each worker attached its remote browser again after losing it.", labels=["worker"])
        for h in handles:
            browser.add_metric([str(h.wid), h.browser_kind, h.endpoint or "", h.connection], 1)
            reconnects.add_metric([str(h.wid)], h.reconnects)
        yield browser
        yield reconnects
        roster = self.daemon.roster
        signed_in = GaugeMetricFamily("tabfleet_account_signed_in", "1 while an account is signed in as its workers last "
                                      "found it, 0 when signed out or challenged (unknown: absent).", labels=["account"])
        for account in sorted({h.account for h in handles} | {a.name for a in roster.accounts.values() if a.has_file}):
            state = roster.state(account)
            if state in ("signed in", "signed out", "challenged"):
                signed_in.add_metric([account], 1 if state == "signed in" else 0)
        yield signed_in
        commits = CounterMetricFamily("tabfleet_store_write_transactions", "Synced LMDB write transactions since start.")
        commits.add_metric([], self.daemon.store.store.commits)
        yield commits


class Metrics:
    """The registry served at /metrics: the fleet collector and the daemon process's own metrics."""

    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = FleetCollector(daemon)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # process_* of tabfleetd itself, read from /proc at scrape time

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition in the format the scraper's Accept header asks for (text 0.0.4 when it names none)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def close(self) -> None:
        self.collector.close()
