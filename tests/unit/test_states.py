"""Unit tests for tabfleetd.states: the task and job transition tables and status buckets."""

from __future__ import annotations

import itertools

import pytest

from tabfleetd.errors import IllegalTransition, StateError
from tabfleetd.states import (
    BUCKETS,
    FINISHED_JOB_STATES,
    JOB_TRANSITIONS,
    TASK_BUCKET,
    TASK_TRANSITIONS,
    JobState,
    TaskState,
    check_job,
    check_task,
)

T, J = TaskState, JobState

ALLOWED_TASK = [(a, b) for a, dsts in TASK_TRANSITIONS.items() for b in sorted(dsts, key=lambda s: s.value)]
ILLEGAL_TASK = [(a, b) for a, b in itertools.product(TaskState, TaskState) if b not in TASK_TRANSITIONS[a]]
ALLOWED_JOB = [(a, b) for a, dsts in JOB_TRANSITIONS.items() for b in sorted(dsts, key=lambda s: s.value)]
ILLEGAL_JOB = [(a, b) for a, b in itertools.product(JobState, JobState) if b not in JOB_TRANSITIONS[a]]


def _ids(pairs: list[tuple]) -> list[str]:
    return [f"{a.value}->{b.value}" for a, b in pairs]


def test_tables_cover_every_state() -> None:
    """Every task and job state has a row in its transition table."""
    assert set(TASK_TRANSITIONS) == set(TaskState)
    assert set(JOB_TRANSITIONS) == set(JobState)


def test_expected_task_transitions_present() -> None:
    """The task moves the daemon relies on are all in the table."""
    needed = [
        (T.PENDING, T.RUNNING), (T.PENDING, T.DONE), (T.PENDING, T.CANCELLED),
        (T.RUNNING, T.DONE), (T.RUNNING, T.FAILED), (T.RUNNING, T.RETRY_WAIT), (T.RUNNING, T.PENDING),
        (T.RUNNING, T.CANCELLED), (T.RETRY_WAIT, T.RUNNING), (T.RETRY_WAIT, T.CANCELLED),
        (T.FAILED, T.PENDING), (T.CANCELLED, T.PENDING),
    ]
    for src, dst in needed:
        assert dst in TASK_TRANSITIONS[src], f"{src.value} -> {dst.value} missing"


@pytest.mark.parametrize("src, dst", ALLOWED_TASK, ids=_ids(ALLOWED_TASK))
def test_allowed_task_transition_passes(src: TaskState, dst: TaskState) -> None:
    """check_task returns the new state for every allowed task transition, given as strings."""
    assert check_task(src.value, dst.value) is dst


@pytest.mark.parametrize("src, dst", ALLOWED_JOB, ids=_ids(ALLOWED_JOB))
def test_allowed_job_transition_passes(src: JobState, dst: JobState) -> None:
    """check_job returns the new state for every allowed job transition, given as strings."""
    assert check_job(src.value, dst.value) is dst


@pytest.mark.parametrize("src, dst", ILLEGAL_TASK, ids=_ids(ILLEGAL_TASK))
def test_illegal_task_transition_raises(src: TaskState, dst: TaskState) -> None:
    """Every task transition not in the table raises IllegalTransition naming both states."""
    with pytest.raises(IllegalTransition) as info:
        check_task(src.value, dst.value)
    assert f"from {src.value} to {dst.value}" in str(info.value)


@pytest.mark.parametrize("src, dst", ILLEGAL_JOB, ids=_ids(ILLEGAL_JOB))
def test_illegal_job_transition_raises(src: JobState, dst: JobState) -> None:
    """Every job transition not in the table raises IllegalTransition naming both states."""
    with pytest.raises(IllegalTransition) as info:
        check_job(src.value, dst.value)
    assert f"from {src.value} to {dst.value}" in str(info.value)


def test_sample_of_illegal_moves_is_illegal() -> None:
    """Moves that would lose work or skip a step are refused."""
    for src, dst in [(T.PENDING, T.FAILED), (T.PENDING, T.RETRY_WAIT), (T.DONE, T.PENDING),
                     (T.FAILED, T.RUNNING), (T.CANCELLED, T.DONE), (T.RUNNING, T.RUNNING)]:
        with pytest.raises(IllegalTransition):
            check_task(src, dst)
    for src, dst in [(J.DONE, J.ACTIVE), (J.PAUSED, J.DONE), (J.CANCELLED, J.PAUSED), (J.FAILED, J.PAUSED)]:
        with pytest.raises(IllegalTransition):
            check_job(src, dst)


def test_illegal_transition_code_and_parent() -> None:
    """IllegalTransition is a StateError with error code 1501."""
    with pytest.raises(StateError) as info:
        check_task("done", "running")
    assert info.value.code == 1501


def test_unknown_state_name_is_not_accepted() -> None:
    """A state name that does not exist is refused rather than passed through."""
    with pytest.raises(ValueError):
        check_task("pending", "exploded")
    with pytest.raises(ValueError):
        check_job("bogus", "active")


def test_done_is_terminal() -> None:
    """A done task and a done job can go nowhere."""
    assert TASK_TRANSITIONS[T.DONE] == frozenset()
    assert JOB_TRANSITIONS[J.DONE] == frozenset()
    for dst in TaskState:
        with pytest.raises(IllegalTransition):
            check_task("done", dst.value)
    for dst in JobState:
        with pytest.raises(IllegalTransition):
            check_job("done", dst.value)


def test_every_task_state_has_a_bucket() -> None:
    """Each task state is counted under one of the reported buckets."""
    assert set(TASK_BUCKET) == set(TaskState)
    assert set(TASK_BUCKET.values()) <= set(BUCKETS)
    assert set(TASK_BUCKET.values()) == set(BUCKETS)


def test_retry_wait_counts_as_pending() -> None:
    """A task waiting to retry is reported as pending, a running one as running."""
    assert TASK_BUCKET[T.RETRY_WAIT] == "pending"
    assert TASK_BUCKET[T.PENDING] == "pending"
    assert TASK_BUCKET[T.RUNNING] == "running"


def test_finished_job_states() -> None:
    """Done, failed and cancelled end a job; active and paused do not."""
    assert FINISHED_JOB_STATES == {J.DONE, J.FAILED, J.CANCELLED}


def test_states_compare_equal_to_their_strings() -> None:
    """States are str enums, so values read back from the store compare equal to them."""
    assert T.RETRY_WAIT == "retry_wait"
    assert J.ACTIVE == "active"
    assert {s.value for s in TaskState} == {"pending", "running", "retry_wait", "done", "failed", "cancelled"}
