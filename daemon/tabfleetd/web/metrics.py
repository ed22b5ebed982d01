"""Prometheus metrics: a collector that reads the daemon's live state at scrape time.

Nothing polls in the background.  Gauges (jobs, tasks, workers, memory) are
read from the scheduler's and fleet's in-memory state when Prometheus
scrapes; counters (attempts, failures, finished tasks per job) and the task
duration histogram are kept by an event listener, so they count from the
daemon's start, as Prometheus counters do.  Rates are left to PromQL
(`rate(tabfleet_job_tasks_finished_total[5m])`), never precomputed here.
A job's name is a label of its tabfleet_job_info series only, joined in with
`* on(job) group_left(name) tabfleet_job_info`.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psutil
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .. import __version__
from ..schedule.scheduler import site_of
from ..states import BUCKETS, FINISHED_JOB_STATES, JobState

if TYPE_CHECKING:
    from ..control.daemonview import DaemonView

log = logging.getLogger(__name__)

_FINISHED = frozenset(s.value for s in FINISHED_JOB_STATES)
MB = 2**20
# Seconds one attempt that made an image took: from a fast local site to a slow image model.
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# An ended job's series stay this long, so the last scrapes see its final counts; then they go.
ENDED_JOB_KEPT_S = 3600.0
# Per-job counts may run this far past two per held job before pruned jobs' counts are dropped between scrapes.
JOB_COUNTS_SLACK = 256


class FleetCollector(Collector):
    """Every tabfleet_* metric, built fresh at each scrape."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.attempts: collections.Counter[tuple[str, str]] = collections.Counter()  # (outcome, site) -> attempts ended so
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()  # (error class, site) -> failed attempts
        self.finished: collections.Counter[str] = collections.Counter()  # done|failed -> tasks that ended so
        self.job_finished: collections.Counter[tuple[str, str]] = collections.Counter()  # (job, done|failed) -> tasks
        self.durations: dict[str, Durations] = collections.defaultdict(Durations)  # site -> attempts that made an image
        # States seen once stay listed at 0, so a series does not vanish when no worker is in that state.
        self.worker_states: set[str] = {"starting", "idle", "busy", "dead"}
        daemon.events.listen(self.on_event)

    def close(self) -> None:
        self.daemon.events.unlisten(self.on_event)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind not in ("task_done", "task_retry", "task_failed"):
            return
        job = self.daemon.scheduler.jobs.get(event["job"]) or {}
        site = site_of(job) if job else "unknown"
        if kind == "task_done":
            self.finished["done"] += 1
            self.job_finished[(event["job"], "done")] += 1
            if not event.get("adopted"):  # an adopted image was made by an attempt counted before
                self.attempts[("done", site)] += 1
                if event.get("seconds") is not None:
                    self.durations[site].observe(float(event["seconds"]))
        else:
            self.attempts[("retry" if kind == "task_retry" else "failed", site)] += 1
            self.failures[(str(event.get("error_kind") or "unknown"), site)] += 1
            if kind == "task_failed":
                self.finished["failed"] += 1
                self.job_finished[(event["job"], "failed")] += 1
        if len(self.job_finished) > 2 * len(self.daemon.scheduler.jobs) + JOB_COUNTS_SLACK:
            self._forget_pruned_jobs()  # a daemon nobody scrapes would otherwise keep every job's counts

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
        # Per-job series only for jobs still going or just ended: a daemon's job history would otherwise grow them for ever.
        now = time.time()
        shown = [j for j in jobs if j["state"] not in _FINISHED or now - (j.get("finished") or now) < ENDED_JOB_KEPT_S]
        info = GaugeMetricFamily("tabfleet_job_info", "1 for each job shown, with its name, site and state as labels.",
                                 labels=["job", "name", "site", "state"])
        job_tasks = GaugeMetricFamily("tabfleet_job_tasks", "Tasks of each job, by state.", labels=["job", "state"])
        job_finished = CounterMetricFamily("tabfleet_job_tasks_finished", "Tasks of each job that ended done or failed, "
                                           "since the daemon started.", labels=["job", "outcome"])
        for job in shown:
            info.add_metric([job["id"], job["name"], site_of(job), job["state"]], 1)
            for bucket in BUCKETS:
                job_tasks.add_metric([job["id"], bucket], job["counts"].get(bucket, 0))
            for outcome in ("done", "failed"):
                job_finished.add_metric([job["id"], outcome], self.job_finished[(job["id"], outcome)])
        yield from (info, job_tasks, job_finished)
        oldest = GaugeMetricFamily("tabfleet_oldest_pending_task_age_seconds",
                                   "How long the oldest task still waiting to run (in an active job) has been queued; "
                                   "0 when none waits.")
        waiting = [j["created"] for j in jobs if j["state"] == JobState.ACTIVE.value and j["counts"].get("pending")]
        oldest.add_metric([], max(0.0, now - min(waiting)) if waiting else 0.0)
        yield oldest
        self._forget_pruned_jobs()

    def _forget_pruned_jobs(self) -> None:
        """Drop the counts of jobs the daemon no longer holds: pruned jobs' counts go with them."""
        known = self.daemon.scheduler.jobs
        for key in [k for k in self.job_finished if k[0] not in known]:
            del self.job_finished[key]

    def _counters(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily("tabfleet_task_attempts", "Task attempts that ended, by outcome and site, since start "
                                       "(their rate is each site's current pace).", labels=["outcome", "site"])
        sites = sorted({site for _, site in self.attempts} | {site for _, site in self.failures})
        for site in sites:
            for outcome in ("done", "retry", "failed"):
                attempts.add_metric([outcome, site], self.attempts[(outcome, site)])
        yield attempts
        failures = CounterMetricFamily("tabfleet_task_failures", "Failed task attempts by error class and site, since start.",
                                       labels=["class", "site"])
        for (cls, site), n in sorted(self.failures.items()):
            failures.add_metric([cls, site], n)
        yield failures
        duration = HistogramMetricFamily("tabfleet_task_duration_seconds",
                                         "Seconds each attempt that made an image took, from send to saved image, by site.",
                                         labels=["site"])
        for site, observed in sorted(self.durations.items()):
            duration.add_metric([site], observed.buckets(), observed.total)
        yield duration
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
        quota = GaugeMetricFamily("tabfleet_account_quota_exhausted",
                                  "1 while an account waits out a plan quota (a stated wait over an hour), else 0.",
                                  labels=["account"])
        for account in sorted({h.account for h in self.daemon.fleet.workers.values()}):  # workers may share one
            cooling.add_metric([account], self.daemon.limits.cooling(account, now))
            quota.add_metric([account], 1 if self.daemon.limits.account_view(account, now).get("quota") else 0)
        yield cooling
        yield quota
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
        stored = GaugeMetricFamily("tabfleet_events_stored", "Events kept in the store (events_max, events_max_age_h), "
                                   "as of the last store write.")
        stored.add_metric([], self.daemon.store.store.events_stored)
        yield stored
        waiting = GaugeMetricFamily("tabfleet_events_pending", "Events waiting for the next store write (about a second).")
        waiting.add_metric([], len(self.daemon.store.store.pending_events))
        yield waiting


class Durations:
    """One histogram's counts per bucket, its count and its sum."""

    def __init__(self) -> None:
        self.counts = [0] * len(DURATION_BUCKETS)
        self.over = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        for i, bound in enumerate(DURATION_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                return
        self.over += 1

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts per upper bound, +Inf last, as HistogramMetricFamily takes them."""
        out, running = [], 0
        for bound, n in zip(DURATION_BUCKETS, self.counts):
            running += n
            out.append((str(bound), float(running)))
        return out + [("+Inf", float(running + self.over))]


class Metrics:
    """The registry served at /metrics: the fleet collector and the daemon process's own metrics."""

    def __init__(self, daemon: DaemonView) -> None:
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
