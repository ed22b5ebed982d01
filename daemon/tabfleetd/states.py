"""The task and job state tables; every state change is checked against them."""

from __future__ import annotations

from enum import Enum

from .errors import IllegalTransition


class TaskState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobState(str, Enum):
    ACTIVE = "active"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


T, J = TaskState, JobState

TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    T.PENDING: frozenset({T.RUNNING, T.DONE, T.CANCELLED}),  # DONE: an existing image adopted
    T.RUNNING: frozenset({T.DONE, T.FAILED, T.RETRY_WAIT, T.PENDING, T.CANCELLED}),
    T.RETRY_WAIT: frozenset({T.RUNNING, T.PENDING, T.DONE, T.CANCELLED}),
    T.DONE: frozenset(),
    T.FAILED: frozenset({T.PENDING}),  # resume gives fresh attempts
    T.CANCELLED: frozenset({T.PENDING}),
}

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    J.ACTIVE: frozenset({J.PAUSED, J.DONE, J.FAILED, J.CANCELLED}),
    J.PAUSED: frozenset({J.ACTIVE, J.CANCELLED}),
    J.DONE: frozenset(),
    J.FAILED: frozenset({J.ACTIVE}),
    J.CANCELLED: frozenset({J.ACTIVE}),
}

# The states a status count is reported under, so counts always add up to the total.
TASK_BUCKET: dict[TaskState, str] = {
    T.PENDING: "pending",
    T.RETRY_WAIT: "pending",
    T.RUNNING: "running",
    T.DONE: "done",
    T.FAILED: "failed",
    T.CANCELLED: "cancelled",
}
BUCKETS = ("done", "failed", "running", "pending", "cancelled")
FINISHED_JOB_STATES = frozenset({J.DONE, J.FAILED, J.CANCELLED})


def check_task(old: str, new: str) -> TaskState:
    """Return the new task state, or raise IllegalTransition."""
    src, dst = TaskState(old), TaskState(new)
    if dst not in TASK_TRANSITIONS[src]:
        raise IllegalTransition(f"task cannot go from {src.value} to {dst.value}")
    return dst


def check_job(old: str, new: str) -> JobState:
    """Return the new job state, or raise IllegalTransition."""
    src, dst = JobState(old), JobState(new)
    if dst not in JOB_TRANSITIONS[src]:
        raise IllegalTransition(f"job cannot go from {src.value} to {dst.value}")
    return dst
