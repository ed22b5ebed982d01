"""Who may read the dashboard and the metrics: holders of the operator's token.

The token is the content of `web_token_file`, or of STATE_DIR/web-token,
which the daemon makes (0600) on first start.  A request gets in with:

- `Authorization: Bearer TOKEN`, as Prometheus (`authorization:
  credentials_file:`) and curl send it; or
- the session cookie that a one-time sign-in link sets: `tabfleetctl
  dashboard` asks the daemon for one (any socket client may, since the page
  shows what `status` does).  The link works once, within CODE_TTL_S; the
  cookie holds an HMAC of the token, never the token itself.

Both are compared in constant time.  Everything but /login/CODE needs one: a
request with neither gets 401, one with a wrong one 403.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import ConfigError

COOKIE = "tabfleet_session"
CODE_TTL_S = 120.0
MAX_CODES = 32  # sign-in links outstanding at once; the oldest unused one lapses first
COOKIE_MAX_AGE_S = 7 * 86400
TOKEN_FILE = "web-token"


def load_token(path: Path | None, state_dir: Path) -> str:
    """The token from the operator's file, or from the daemon's own STATE_DIR/web-token, made on first use."""
    if path is None:
        path = state_dir / TOKEN_FILE
        if not path.exists():
            tmp = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    try:
        with open(path, encoding="utf-8") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            token = f.read(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"web_token_file {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & stat.S_IROTH:
        raise ConfigError(f"web_token_file {path} is readable by every user (mode {mode:04o}): `chmod o-r` it")
    if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(f"web_token_file {path}: the token must be one line of at least 16 printable ASCII "
                          "characters without spaces")
    return token


class WebAuth:
    """Checks each HTTP request's token or session cookie, and issues one-time sign-in codes."""

    def __init__(self, token: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.token = token.encode()
        self.session = hmac.new(self.token, b"tabfleet dashboard session", hashlib.sha256).hexdigest().encode()
        self.clock = clock
        self.codes: dict[str, float] = {}  # code -> expiry, oldest first

    def new_code(self) -> str:
        now = self.clock()
        for code in [c for c, expiry in self.codes.items() if expiry <= now]:
            del self.codes[code]
        while len(self.codes) >= MAX_CODES:
            del self.codes[next(iter(self.codes))]
        code = secrets.token_urlsafe(24)
        self.codes[code] = now + CODE_TTL_S
        return code

    def redeem(self, code: str) -> bool:
        expiry = self.codes.pop(code, None)
        return expiry is not None and expiry > self.clock()

    def verdict(self, headers: Any, cookies: Any) -> int | None:
        """None to let a request in, else its status: 401 without credentials, 403 with wrong ones."""
        header = headers.get("Authorization")
        if header is not None:
            scheme, _, credentials = header.partition(" ")
            good = scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode("utf-8", "replace"),
                                                                      self.token)
            return None if good else 403
        cookie = cookies.get(COOKIE)
        if cookie is not None:
            return None if hmac.compare_digest(cookie.encode("utf-8", "replace"), self.session) else 403
        return 401

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.match_info.route.name == "login":
            return await handler(request)
        status = self.verdict(request.headers, request.cookies)
        if status == 401:
            raise web.HTTPUnauthorized(
                text="sign in: open the link `tabfleetctl dashboard` prints, or send Authorization: Bearer TOKEN\n",
                headers={"WWW-Authenticate": 'Bearer realm="tabfleet"'})
        if status == 403:
            raise web.HTTPForbidden(text="wrong token or session\n")
        return await handler(request)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """GET /login/CODE: a fresh code sets the session cookie and leads to the dashboard."""
        if not self.redeem(request.match_info["code"]):
            raise web.HTTPForbidden(text="this sign-in link was used already or has expired: run `tabfleetctl dashboard` "
                                         "for a new one\n")
        response = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
        response.set_cookie(COOKIE, self.session.decode(), httponly=True, samesite="Strict", path="/",
                            max_age=COOKIE_MAX_AGE_S)
        return response
