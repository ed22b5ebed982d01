"""The dashboard's and metrics' access check: bearer token, session cookie, one-time sign-in codes, the token file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tabfleetd.errors import ConfigError
from tabfleetd.web.webauth import CODE_TTL_S, COOKIE, MAX_CODES, WebAuth, load_token

TOKEN = "s3cret-token-for-tests-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bearer_token_and_session_cookie() -> None:
    """The right token or cookie lets in; a wrong one is 403; none is 401; the cookie is not the token."""
    auth = WebAuth(TOKEN)
    assert auth.verdict({"Authorization": f"Bearer {TOKEN}"}, {}) is None
    assert auth.verdict({"Authorization": f"bearer  {TOKEN} "}, {}) is None
    assert auth.verdict({"Authorization": "Bearer wrong"}, {}) == 403
    assert auth.verdict({"Authorization": f"Basic {TOKEN}"}, {}) == 403
    assert auth.verdict({}, {COOKIE: auth.session.decode()}) is None
    assert auth.verdict({}, {COOKIE: TOKEN}) == 403
    assert auth.verdict({}, {}) == 401
    assert TOKEN not in auth.session.decode()


def test_sign_in_codes_work_once_and_expire() -> None:
    """A code is good once, within CODE_TTL_S; at most MAX_CODES are outstanding, the oldest lapsing first."""
    clock = Clock()
    auth = WebAuth(TOKEN, clock)
    code = auth.new_code()
    assert auth.redeem(code) and not auth.redeem(code)
    late = auth.new_code()
    clock.now += CODE_TTL_S + 1
    assert not auth.redeem(late)
    codes = [auth.new_code() for _ in range(MAX_CODES + 1)]
    assert not auth.redeem(codes[0]) and auth.redeem(codes[-1])
    assert not auth.redeem("guessed")


def test_the_daemon_makes_its_own_token_once(tmp_path: Path) -> None:
    """Without web_token_file the daemon writes STATE_DIR/web-token (0600, even under umask 0) and reads it back later."""
    old = os.umask(0)
    try:
        token = load_token(None, tmp_path)
    finally:
        os.umask(old)
    assert len(token) >= 32 and stat.S_IMODE((tmp_path / "web-token").stat().st_mode) == 0o600
    assert load_token(None, tmp_path) == token


def test_an_operator_token_file_is_checked(tmp_path: Path) -> None:
    """A token file readable by everyone, too short, or missing is refused, naming the file."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o640)
    assert load_token(path, tmp_path) == TOKEN
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by every user"):
        load_token(path, tmp_path)
    os.chmod(path, 0o600)
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(path, tmp_path)
    with pytest.raises(ConfigError, match=f"{tmp_path / 'nope'}: cannot read it"):
        load_token(tmp_path / "nope", tmp_path)
