"""Account sessions in and out: Netscape cookies.txt and the JSON that cookie-export extensions and tools write.

A session is ``{"cookies": [cookie], "origins": [{"origin", "localStorage": [{"name", "value"}]}]}``.  A cookie
is kept in the shape CDP's Storage.setCookies takes: ``name``, ``value``, ``domain`` (a leading dot for a
domain cookie, none for a host-only one), ``path``, ``secure``, ``httpOnly``, and when known ``sameSite``
(Strict, Lax, None) and ``expires`` (Unix seconds; absent for a session cookie).

Read: Netscape cookies.txt (curl, wget, yt-dlp, "Get cookies.txt"); a JSON list of cookies as EditThisCookie and
Cookie-Editor export them (``expirationDate``, ``hostOnly``, ``sameSite: "no_restriction"``) or as CDP and
Puppeteer write them (``expires``); a JSON object with ``cookies`` (and ``origins``), Playwright's storageState,
which is also what ``accounts export`` writes by default.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import SessionFileError

MAX_COOKIES = 10_000
MAX_ORIGINS = 100
MAX_ITEM_CHARS = 1 << 20  # one cookie value or one localStorage value
SAME_SITE = {"strict": "Strict", "lax": "Lax", "none": "None", "no_restriction": "None"}  # unspecified: none given
NETSCAPE_HEADER = "# Netscape HTTP Cookie File\n# Exported by tabfleetctl accounts export; keep it private: it signs in.\n"


def parse(text: str, filename: str, now: float | None = None) -> dict[str, Any]:
    """The session a cookies file holds; SessionFileError names the file, the line and the problem.

    Cookies that have expired are left out; a file with no cookie left is refused.
    """
    now = time.time() if now is None else now
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(("[", "{")):
        session = parse_json(stripped, filename)
    else:
        session = parse_netscape(text, filename)
    session["cookies"] = [c for c in session["cookies"] if "expires" not in c or c["expires"] > now]
    if not session["cookies"] and not session["origins"]:
        raise SessionFileError(filename, None, "holds no cookie that has not expired: export the session again")
    if len(session["cookies"]) > MAX_COOKIES:
        raise SessionFileError(filename, None, f"holds {len(session['cookies'])} cookies, more than {MAX_COOKIES}")
    return session


def parse_netscape(text: str, filename: str) -> dict[str, Any]:
    cookies = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip("\r\n\ufeff")
        http_only = line.startswith("#HttpOnly_")
        if http_only:
            line = line[len("#HttpOnly_"):]
        elif not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 7:
            raise SessionFileError(filename, number, f"a Netscape cookie line has 7 tab-separated fields, this one "
                                   f"{len(fields)} (domain, subdomains, path, secure, expiry, name, value)")
        domain, subdomains, path, secure, expiry, name, value = fields
        if subdomains.upper() not in ("TRUE", "FALSE") or secure.upper() not in ("TRUE", "FALSE"):
            raise SessionFileError(filename, number, "the 2nd and 4th fields must be TRUE or FALSE")
        try:
            expires = float(expiry)
        except ValueError:
            raise SessionFileError(filename, number, "the 5th field (expiry) must be a Unix time") from None
        host = domain.lstrip(".")
        cookie = {"name": name, "value": value, "domain": "." + host if subdomains.upper() == "TRUE" else host,
                  "path": path or "/", "secure": secure.upper() == "TRUE", "httpOnly": http_only}
        if expires > 0:
            cookie["expires"] = expires
        cookies.append(checked(cookie, filename, number))
    return {"cookies": cookies, "origins": []}


def parse_json(text: str, filename: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SessionFileError(filename, getattr(exc, "lineno", None), f"not valid JSON: {getattr(exc, 'msg', exc)}") from None
    if isinstance(data, dict):
        if not isinstance(data.get("cookies", []), list):
            raise SessionFileError(filename, None, "key 'cookies' must be a list of cookies")
        items, origins = data.get("cookies", []), parse_origins(data.get("origins", []), filename)
    elif isinstance(data, list):
        items, origins = data, []
    else:
        raise SessionFileError(filename, None, "must hold a list of cookies or an object with 'cookies'")
    return {"cookies": [json_cookie(item, filename, i) for i, item in enumerate(items)], "origins": origins}


def json_cookie(item: Any, filename: str, index: int) -> dict[str, Any]:
    """One cookie as an extension (expirationDate, hostOnly), CDP/Puppeteer or Playwright (expires) writes it."""
    where = f"cookie {index}"
    if not isinstance(item, dict):
        raise SessionFileError(filename, None, f"{where} is not an object")
    for key in ("name", "value", "domain"):
        if not isinstance(item.get(key), str):
            raise SessionFileError(filename, None, f"{where}: key '{key}' must be a string")
    domain = item["domain"]
    if item.get("hostOnly") is True:
        domain = domain.lstrip(".")
    elif item.get("hostOnly") is False and not domain.startswith("."):
        domain = "." + domain
    cookie: dict[str, Any] = {"name": item["name"], "value": item["value"], "domain": domain,
                              "path": item.get("path") or "/", "secure": bool(item.get("secure")),
                              "httpOnly": bool(item.get("httpOnly"))}
    same_site = SAME_SITE.get(str(item.get("sameSite") or "").lower())
    if same_site:
        cookie["sameSite"] = same_site
    expires = item.get("expirationDate", item.get("expires"))
    if not item.get("session") and isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires > 0:
        cookie["expires"] = float(expires)
    for key in ("sourceScheme", "sourcePort"):  # what Chromium says it was set by: kept, so it matches as before
        if isinstance(item.get(key), (str, int)) and not isinstance(item.get(key), bool):
            cookie[key] = item[key]
    return checked(cookie, filename, None, where)


def checked(cookie: dict[str, Any], filename: str, line: int | None, where: str = "the cookie") -> dict[str, Any]:
    if not cookie["name"] and not cookie["value"]:
        raise SessionFileError(filename, line, f"{where} has neither a name nor a value")
    if not cookie["domain"].lstrip(".") or any(c in cookie["domain"] for c in "/ \t;"):
        raise SessionFileError(filename, line, f"{where} has no valid domain")
    if not str(cookie["path"]).startswith("/"):
        raise SessionFileError(filename, line, f"{where}'s path must start with /")
    if len(cookie["value"]) > MAX_ITEM_CHARS or any(c in cookie["name"] + cookie["value"] for c in "\r\n\0"):
        raise SessionFileError(filename, line, f"{where} has a value too long or with line breaks")
    return cookie


def parse_origins(origins: Any, filename: str) -> list[dict[str, Any]]:
    """Playwright's `origins`: local storage items per origin."""
    if not isinstance(origins, list) or len(origins) > MAX_ORIGINS:
        raise SessionFileError(filename, None, f"key 'origins' must be a list of at most {MAX_ORIGINS} origins")
    out = []
    for i, entry in enumerate(origins):
        items = entry.get("localStorage") if isinstance(entry, dict) else None
        if (not isinstance(entry, dict) or not isinstance(entry.get("origin"), str)
                or not entry["origin"].startswith(("http://", "https://")) or not isinstance(items, list)):
            raise SessionFileError(filename, None, f"origin {i} needs an http(s) 'origin' and a 'localStorage' list")
        kept = []
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("value"), str)
                    and len(item["value"]) <= MAX_ITEM_CHARS):
                raise SessionFileError(filename, None, f"origin {i}: each localStorage item needs a string name and value")
            kept.append({"name": item["name"], "value": item["value"]})
        out.append({"origin": entry["origin"].rstrip("/"), "localStorage": kept})
    return out


def from_cdp(cookies: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
    """Cookies as Storage.getCookies reports them, in the stored shape (expired and partitioned ones left out)."""
    now = time.time() if now is None else now
    kept = []
    for c in cookies:
        if c.get("partitionKey") or not isinstance(c.get("name"), str) or not isinstance(c.get("value"), str):
            continue
        cookie = {k: c[k] for k in ("name", "value", "domain", "path") if k in c}
        cookie.update(secure=bool(c.get("secure")), httpOnly=bool(c.get("httpOnly")))
        if c.get("sameSite") in ("Strict", "Lax", "None"):
            cookie["sameSite"] = c["sameSite"]
        if not c.get("session") and isinstance(c.get("expires"), (int, float)) and c["expires"] > 0:
            if c["expires"] <= now:
                continue
            cookie["expires"] = float(c["expires"])
        for key in ("sourceScheme", "sourcePort"):
            if key in c:
                cookie[key] = c[key]
        kept.append(cookie)
    return kept[:MAX_COOKIES]


def to_json(session: dict[str, Any]) -> str:
    """Playwright's storageState: read back by `accounts import`, by Playwright and by most cookie tools."""
    cookies = [{"name": c["name"], "value": c["value"], "domain": c["domain"], "path": c["path"],
                "expires": c.get("expires", -1), "httpOnly": c["httpOnly"], "secure": c["secure"],
                "sameSite": c.get("sameSite", "Lax")} for c in session.get("cookies", [])]
    return json.dumps({"cookies": cookies, "origins": session.get("origins", [])}, indent=2) + "\n"


def to_netscape(session: dict[str, Any]) -> str:
    """cookies.txt, as curl and browser extensions read it (local storage does not fit in it and is left out)."""
    lines = [NETSCAPE_HEADER]
    for c in session.get("cookies", []):
        domain = c["domain"]
        prefix = "#HttpOnly_" if c["httpOnly"] else ""
        lines.append("\t".join([prefix + domain, "TRUE" if domain.startswith(".") else "FALSE", c["path"],
                                "TRUE" if c["secure"] else "FALSE", str(int(c.get("expires", 0))), c["name"], c["value"]])
                     + "\n")
    return "".join(lines)
