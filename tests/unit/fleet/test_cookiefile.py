"""Unit tests for tabfleetd.fleet.cookiefile: cookies.txt and the JSON cookie exports, in and out."""

from __future__ import annotations

import json

import pytest

from tabfleetd.fleet import cookiefile
from tabfleetd.errors import SessionFileError

NOW = 1_800_000_000.0
LATER = NOW + 86400


def test_netscape_file_with_httponly_domain_and_session_cookies() -> None:
    """cookies.txt: #HttpOnly_ lines are cookies, TRUE makes a domain cookie, expiry 0 a session cookie."""
    text = ("# Netscape HTTP Cookie File\n\n"
            f".chatgpt.com\tTRUE\t/\tTRUE\t{int(LATER)}\t__Secure-next-auth.session-token\tabc.def\n"
            "#HttpOnly_chatgpt.com\tFALSE\t/api\tFALSE\t0\tsid\txyz\n"
            "# a comment\n")
    session = cookiefile.parse(text, "cookies.txt", NOW)
    assert session["cookies"] == [
        {"name": "__Secure-next-auth.session-token", "value": "abc.def", "domain": ".chatgpt.com", "path": "/",
         "secure": True, "httpOnly": False, "expires": LATER},
        {"name": "sid", "value": "xyz", "domain": "chatgpt.com", "path": "/api", "secure": False, "httpOnly": True}]
    assert session["origins"] == []


def test_extension_json_export() -> None:
    """EditThisCookie / Cookie-Editor: expirationDate, hostOnly, session and sameSite as they write them."""
    items = [{"domain": ".example.com", "expirationDate": LATER, "hostOnly": False, "httpOnly": True, "name": "a",
              "path": "/", "sameSite": "no_restriction", "secure": True, "session": False, "storeId": "0", "value": "1"},
             {"domain": "www.example.com", "hostOnly": True, "httpOnly": False, "name": "b", "path": "/",
              "sameSite": "unspecified", "secure": False, "session": True, "value": "2"},
             {"domain": "example.com", "hostOnly": False, "name": "c", "path": "/", "value": "3", "sameSite": "lax"}]
    cookies = cookiefile.parse(json.dumps(items), "export.json", NOW)["cookies"]
    assert cookies[0] == {"name": "a", "value": "1", "domain": ".example.com", "path": "/", "secure": True,
                          "httpOnly": True, "sameSite": "None", "expires": LATER}
    assert cookies[1] == {"name": "b", "value": "2", "domain": "www.example.com", "path": "/", "secure": False,
                          "httpOnly": False}
    assert cookies[2]["domain"] == ".example.com" and cookies[2]["sameSite"] == "Lax"


def test_storage_state_round_trip_keeps_cookies_and_local_storage() -> None:
    """What `accounts export` writes (Playwright's storageState) reads back to the same session."""
    session = {"cookies": [{"name": "s", "value": "v", "domain": "10.0.0.1", "path": "/", "secure": False,
                            "httpOnly": True},
                           {"name": "t", "value": "w", "domain": ".x.example", "path": "/", "secure": True,
                            "httpOnly": False, "sameSite": "Strict", "expires": LATER}],
               "origins": [{"origin": "https://x.example", "localStorage": [{"name": "token", "value": "j.w.t"}]}]}
    text = cookiefile.to_json(session)
    assert json.loads(text)["cookies"][0]["expires"] == -1  # Playwright's word for a session cookie
    back = cookiefile.parse(text, "state.json", NOW)
    assert back["origins"] == session["origins"]
    assert back["cookies"][0] == session["cookies"][0] | {"sameSite": "Lax"}
    assert back["cookies"][1] == session["cookies"][1]


def test_netscape_export_reads_back() -> None:
    """cookies.txt out and in again: domain, host-only, HttpOnly, secure and expiry survive."""
    session = {"cookies": [{"name": "a", "value": "1", "domain": "h.example", "path": "/", "secure": True,
                            "httpOnly": True, "expires": LATER},
                           {"name": "b", "value": "2", "domain": ".example", "path": "/p", "secure": False,
                            "httpOnly": False}], "origins": []}
    text = cookiefile.to_netscape(session)
    assert text.startswith("# Netscape HTTP Cookie File\n")
    assert cookiefile.parse(text, "c.txt", NOW)["cookies"] == session["cookies"]


def test_expired_cookies_are_left_out_and_a_file_of_only_those_is_refused() -> None:
    """An expired cookie would sign nobody in: dropped; nothing left means the file is refused."""
    text = f"a.example\tFALSE\t/\tFALSE\t{int(NOW - 10)}\told\tx\na.example\tFALSE\t/\tFALSE\t{int(LATER)}\tnew\ty\n"
    assert [c["name"] for c in cookiefile.parse(text, "c.txt", NOW)["cookies"]] == ["new"]
    with pytest.raises(SessionFileError, match="no cookie that has not expired"):
        cookiefile.parse(f"a.example\tFALSE\t/\tFALSE\t{int(NOW - 10)}\told\tx\n", "c.txt", NOW)


@pytest.mark.parametrize("text, problem", [
    ("a.example\tFALSE\t/\tFALSE\t0\tname\n", "c.txt line 1: a Netscape cookie line has 7 tab-separated fields"),
    ("# x\na.example\tMAYBE\t/\tFALSE\t0\tn\tv\n", "c.txt line 2: the 2nd and 4th fields must be TRUE or FALSE"),
    ("a.example\tFALSE\t/\tFALSE\tsoon\tn\tv\n", "c.txt line 1: the 5th field (expiry) must be a Unix time"),
    ("a.example\tFALSE\tnoslash\tFALSE\t0\tn\tv\n", "c.txt line 1: the cookie's path must start with /"),
    ('[{"name": "n", "value": "v"}]', "cookie 0: key 'domain' must be a string"),
    ('{"cookies": [], "origins": [{"origin": "file:///x", "localStorage": []}]}', "origin 0 needs an http(s) 'origin'"),
    ('[{"name": "n",', "c.txt line 1: not valid JSON"),
    ('{"cookies": 5}', "key 'cookies' must be a list of cookies"),
])
def test_bad_files_name_the_line_and_problem(text: str, problem: str) -> None:
    """Each refusal says which file, which line or cookie, and what is wrong."""
    with pytest.raises(SessionFileError) as info:
        cookiefile.parse(text, "c.txt", NOW)
    assert problem in str(info.value) and info.value.code == 1406


def test_cookies_read_from_a_browser_are_kept_in_the_stored_shape() -> None:
    """Storage.getCookies' answer: session cookies lose their -1 expiry, expired and partitioned ones go."""
    cdp = [{"name": "s", "value": "1", "domain": "h", "path": "/", "expires": -1, "session": True, "size": 2,
            "httpOnly": True, "secure": False, "priority": "Medium", "sourceScheme": "NonSecure", "sourcePort": 8000},
           {"name": "old", "value": "1", "domain": "h", "path": "/", "expires": NOW - 1, "session": False},
           {"name": "chip", "value": "1", "domain": "h", "path": "/", "expires": -1, "session": True,
            "partitionKey": {"topLevelSite": "https://a"}}]
    assert cookiefile.from_cdp(cdp, NOW) == [{"name": "s", "value": "1", "domain": "h", "path": "/", "secure": False,
                                              "httpOnly": True, "sourceScheme": "NonSecure", "sourcePort": 8000}]
