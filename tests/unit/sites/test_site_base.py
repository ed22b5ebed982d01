"""Unit tests for tabfleetd.sites.base: stated waits and the default failure classification."""

from __future__ import annotations

from typing import Any

import pytest

from tabfleetd.sites.base import AUTH, PERMANENT, RATE_LIMIT, TRANSIENT, SiteAdapter, stated_wait


class TinyAdapter(SiteAdapter):
    """The smallest concrete adapter: only classify() from the base class is exercised."""

    name = "tiny"

    async def open(self, page: Any, url: str, timeout: float) -> None:
        raise NotImplementedError

    async def generate(self, page: Any, prompt: str, deadline: float, cdp_timeout: float) -> bytes:
        raise NotImplementedError


@pytest.fixture
def adapter() -> TinyAdapter:
    return TinyAdapter()


# --- stated_wait ----------------------------------------------------------------


@pytest.mark.parametrize(
    "message, seconds",
    [
        ("try again in 12 seconds", 12.0),
        ("You're generating images too quickly. Please try again in 30 seconds.", 30.0),
        ("Please wait for 3 minutes before sending another prompt", 180.0),
        ("Limit reached, try again in 2 hours", 7200.0),
        ("Try again in 1 hour.", 3600.0),
        ("wait 45s", 45.0),
        ("Please wait 5 min", 300.0),
        ("try again in 10 sec", 10.0),
        ("TRY AGAIN IN 7 SECONDS", 7.0),
        ("try again in 1.5 minutes", 90.0),
        ("wait 2 h before retrying", 7200.0),
        ("Please wait for an hour before generating more images.", 3600.0),
        ("Try again in a minute.", 60.0),
        ("wait two minutes", 120.0),
        ("try again in a few minutes", 180.0),
    ],
)
def test_stated_wait_parses(message: str, seconds: float) -> None:
    """A message that states a wait yields that wait in seconds."""
    assert stated_wait(message) == seconds


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Something went wrong",
        "Too many requests",
        "try again later",
        "the server returned 503 after 12 seconds",  # a number, but no wait is stated
        "please wait",
        "wait a moment, then try once more",
    ],
)
def test_stated_wait_none_when_not_stated(message: str) -> None:
    """A message without a stated wait yields None."""
    assert stated_wait(message) is None


def test_stated_wait_takes_first_stated_wait() -> None:
    """With two waits in one message the first one counts."""
    assert stated_wait("wait 20 seconds; if it still fails try again in 5 minutes") == 20.0


# --- classify ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, wait",
    [
        ("You're generating images too quickly. Please try again in 30 seconds.", 30.0),
        ("Too many requests in 1 hour. Try again later.", None),
        ("Rate limit exceeded", None),
        ("rate limit reached, wait 2 minutes", 120.0),
        ("Try again in 12 seconds", 12.0),
    ],
)
def test_classify_rate_limit(adapter: TinyAdapter, message: str, wait: float | None) -> None:
    """Rate-limit messages are rate_limit, with the stated wait when there is one."""
    assert adapter.classify(message) == (RATE_LIMIT, wait)


@pytest.mark.parametrize(
    "message",
    [
        "This prompt may violate our content policy.",
        "Your request was rejected by our Content Policy",
        "The prompt violates our terms",
    ],
)
def test_classify_content_policy_is_permanent(adapter: TinyAdapter, message: str) -> None:
    """Content-policy refusals are permanent and carry no wait."""
    assert adapter.classify(message) == (PERMANENT, None)


@pytest.mark.parametrize(
    "message",
    [
        "Please log in to continue",
        "You need to login first",
        "Sign in to generate images",
        "Your session expired",
    ],
)
def test_classify_login_is_auth(adapter: TinyAdapter, message: str) -> None:
    """Messages asking the user to log in are auth failures with no wait."""
    assert adapter.classify(message) == (AUTH, None)


@pytest.mark.parametrize("message", ["Something went wrong", "Network error", "Internal server error (500)", ""])
def test_classify_other_is_transient(adapter: TinyAdapter, message: str) -> None:
    """Anything unrecognised is transient."""
    assert adapter.classify(message) == (TRANSIENT, None)


def test_classify_transient_keeps_stated_wait(adapter: TinyAdapter) -> None:
    """A transient message that states a wait passes the wait along."""
    assert adapter.classify("Server busy, please wait 20 seconds") == (TRANSIENT, 20.0)


def test_site_adapter_is_abstract() -> None:
    """SiteAdapter itself cannot be instantiated; a concrete subclass can."""
    with pytest.raises(TypeError):
        SiteAdapter()  # type: ignore[abstract]
    assert TinyAdapter().opened_url is None
