"""Site profiles: TOML files that tell a worker how to drive one prompt→image web UI.

Standard library only, so the daemon can check a profile at submit (and for
``tabfleetctl sites check``) without a browser. A checked profile is a plain
dict with every default filled in. It is stored on the job, so editing the
file later never changes a job that is already queued, and the daemon never
reads the user's files: the client sends the profile's text.

Built-in profiles live next to the site adapter, in ``sites/*.toml``.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import BadArgs, ProfileError

BUILTIN_DIR = Path(__file__).parent
CLASSES = ("transient", "rate_limit", "permanent", "auth", "challenge")
PLACEHOLDERS = ("demo", "job")  # filled by the daemon; every other placeholder is a start-URL variable
STANDARD_VARS = ("host", "port")  # variables any profile may use without declaring them in `vars`
MAX_TEXT = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_PART = re.compile(r"[A-Za-z0-9]+")
_MODIFIERS = {"Control", "Shift", "Alt", "Meta"}
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
# A variable's value goes into the URL as it is: no spaces, and nothing that would end the host or path early.
_VAR_VALUE = re.compile(r"[A-Za-z0-9._~:/%+=,\[\]-]{1,300}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# A plain host[:port]: nothing a browser would read differently from Python (userinfo, escapes, backslashes).
_AUTHORITY = re.compile(rf"(?P<host>{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::\d{{1,5}})?")
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_LANG = r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*"

# What a site profile may put in browser.args: switches that change how pages see the browser (language, window,
# user agent, scale), never what the browser runs, loads or connects to. Each maps to the pattern of its value
# ("" for a switch without one) and how to write it. Any other switch is the operator's, in chromium_args.
SITE_SWITCHES: dict[str, tuple[str, str]] = {
    "--lang": (_LANG, "--lang=LANGUAGE, e.g. --lang=de-DE"),
    "--accept-lang": (rf"{_LANG}(?:,{_LANG})*", "--accept-lang=LANGUAGE,LANGUAGE…, e.g. --accept-lang=de-DE,de"),
    "--window-size": (r"\d{2,5},\d{2,5}", "--window-size=WIDTH,HEIGHT, e.g. --window-size=1280,800"),
    "--force-device-scale-factor": (r"(?:[1-4](?:\.\d{1,3})?|0\.\d{1,3})", "--force-device-scale-factor=N, N up to 4"),
    "--user-agent": (r"[\x20-\x7e]{1,512}", "--user-agent=TEXT, printable ASCII up to 512 characters"),
    "--disable-blink-features": ("AutomationControlled", "--disable-blink-features=AutomationControlled"),
    "--hide-scrollbars": ("", "--hide-scrollbars"),
    "--force-dark-mode": ("", "--force-dark-mode"),
    "--start-maximized": ("", "--start-maximized"),
}


@dataclass(frozen=True)
class Key:
    """One profile key: its kind, default and meaning (the README's profile table follows these)."""

    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    least: float = 0.0
    required: bool = False


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "name": Key("name", None, "the profile's name, shown in status and used for pacing (default: the file's name)"),
        "description": Key("str", "", "one line shown by `tabfleetctl sites`"),
        "start_url": Key("url", None, "the page prompts are typed into; `{demo}` is the bundled demo site, `{job}` the job id, "
                         "`{host}`, `{port}` and the names in `vars` are start-URL variables; any other host must be one "
                         "the daemon allows (`site_hosts`)", required=True),
        "vars": Key("vars", {}, "start-URL variables and their defaults (`\"\"`: none), e.g. `{ space = \"demo\" }`; a value "
                    "comes from `submit --var NAME=VALUE`, else the daemon config's `site_vars`, else this default"),
        "knobs": Key("names", [], "`--knob K=V` names this site accepts; they are added to the start URL's query string"),
    },
    "conversation": {
        "new": Key("choice", "navigate", "how each prompt gets a fresh conversation: `navigate` (load the start URL), "
                   "`click` (click `selector`) or `keep` (one conversation for all prompts)",
                   choices=("navigate", "click", "keep")),
        "selector": Key("selector", "", "with `new = \"click\"`: the new-conversation button"),
        "ready": Key("selectors", [], "the page counts as loaded once one of these is visible (default: the input selectors); "
                     "for a page built by scripts after load, name what appears last (e.g. the send button)"),
    },
    "input": {
        "selectors": Key("selectors", None, "the prompt box; the first visible match wins, so list fallbacks in order",
                         required=True),
        "method": Key("choice", "insert_text", "`insert_text` (CDP Input.insertText, one call, works on contenteditable "
                      "editors such as ProseMirror) or `keys` (real keystrokes)", choices=("insert_text", "keys")),
        "key_delay_ms": Key("float", 0.0, "with `method = \"keys\"`: pause between keystrokes"),
        "clear": Key("bool", True, "empty the box before typing (select all + delete, falling back to Ctrl+A, Backspace); "
                     "with false, a box that holds text fails the task (permanent): the site would get the prompt glued to it"),
    },
    "submit": {
        "selectors": Key("selectors", [], "the send button; the first visible, enabled match is clicked"),
        "key": Key("key", "Enter", "pressed in the box when no send button matches or the click did not send "
                   "(e.g. `Enter`, `Control+Enter`; empty: never)"),
        "confirm": Key("choices", ["composer_empty"], "checks that the prompt was really sent, all of them: `composer_empty` "
                       "(the input box emptied), `user_turn` (a new `user_turn` holding exactly the prompt), `busy` (a busy "
                       "signal appeared, or the page began answering; for a form whose box keeps its text); `[]`: none, "
                       "the click is trusted. Before any of them, the box is read back and must hold exactly the prompt",
                       choices=("composer_empty", "user_turn", "busy")),
        "user_turn": Key("selector", "", "with confirm `user_turn`: one element per prompt sent; a new one must appear and its "
                         "text must equal the prompt (whitespace collapsed), else the task fails and nothing is saved"),
    },
    "busy": {
        "selectors": Key("selectors", [], "the site is still working while one of these is visible (stop button, spinner)"),
        "settle_s": Key("float", 2.0, "busy must stay gone this long before the answer counts as finished (busy signals flicker)"),
    },
    "result": {
        "scope": Key("selector", "body", "result images are looked for inside this element only"),
        "selector": Key("selector", None, "a result image (an img element)", required=True),
        "answer": Key("selector", "", "the site's reply to a prompt; its text is matched by `where = \"answer\"` messages, "
                      "and a finished reply without an image ends the wait"),
        "answer_in_place": Key("bool", False, "the page updates one `answer` element (a status line) instead of adding one per "
                               "prompt: it counts as this prompt's reply once its content changed after the send"),
        "count": Key("int", 1, "images the site makes per prompt; the first is saved, the rest are waited for so that "
                     "a late one is never taken for the next prompt's", least=1),
        "dedupe": Key("regex", "", "applied to an image's src; the first group (or the match) is the image's identity, "
                      "so copies of one image count once (default: the whole src)"),
        "stable_s": Key("float", 1.0, "the new images (and their src) must stay unchanged this long"),
        "grace_s": Key("float", 5.0, "with fewer images than `count`, or a reply without any: how long to wait for more "
                       "after the page went quiet"),
        "min_px": Key("int", 0, "ignore images narrower or lower than this (avatars, thumbnails)"),
        "repeat": Key("choice", "touched", "when an image whose src was already on the page before the send is this prompt's "
                      "(a repeated prompt on a page that gives one prompt one URL): `never` (only a src not seen before), "
                      "`touched` (also an `<img>` the page inserted or whose src it set again after the send), `signal` (also "
                      "an untouched one, once the busy cycle this send caused has ended, or without busy selectors an "
                      "`answer` changed; for one result slot, as on Gradio; declare the page's errors as [[messages]], "
                      "or a kept image would be taken)", choices=("never", "touched", "signal")),
    },
    "download": {
        "method": Key("choice", "fetch", "`fetch`: in-page fetch with the page's cookies (http(s), data: and blob: URLs; "
                      "a canvas copy as last resort) or `response`: the body of the network response the browser got "
                      "for the image (for cross-origin images)", choices=("fetch", "response")),
    },
    "login": {
        "urls": Key("regexes", [], "a page URL matching one of these is a login page: the worker is signed out (auth)"),
        "selectors": Key("selectors", [], "a visible match means signed out (e.g. a log-in button)"),
        "probe_url": Key("probe", "", "fetched in the page with its cookies when the site is opened: a path on the "
                         "start URL's site (`/api/session`) or an http(s) URL on a host the daemon allows"),
        "probe_pattern": Key("regex", "", "the probe's response must match this, else the worker is signed out"),
        "local_storage": Key("bool", False, "the site keeps its sign-in in local storage too: the account's session "
                             "keeps the site's local storage beside its cookies (see \"Accounts\")"),
    },
    "timeouts": {
        "load_s": Key("float", 30.0, "for the start page to load and show its input (or ready) selector", least=0.1),
        "sent_s": Key("float", 5.0, "for the send button to appear and for the send to be confirmed", least=0.1),
        "answer_s": Key("float", 0.0, "the longest wait for an answer (0: the task deadline); the wait actually used is "
                        "learned from the site's answer times (3 × their 95th percentile, at least 5 s) within it"),
        "challenge_s": Key("float", 15.0, "how long a bot check (a `challenge` message) is given to clear by itself, "
                           "before the page is loaded once more and, if it is still there, the worker is blocked"),
    },
    "pacing": {
        "pause_s": Key("float", 0.0, "pause between two prompts on one worker"),
        "jitter_s": Key("float", 0.0, "± random seconds added to the pause"),
        "limit_scope": Key("choice", "auto", "whom the site's rate limits apply to: `account` (each signed-in account has "
                           "its own), `site` (all accounts together) or `auto` (learned from which accounts get refused)",
                           choices=("auto", "account", "site")),
    },
    "browser": {
        "headless": Key("bool", True, "whether the site works in headless Chromium; false runs a headed Chromium on "
                        "DISPLAY, or on the worker's own Xvfb"),
        "args": Key("switches", [], "extra Chromium switches for this site, from a short allow-list: `--lang`, "
                    "`--accept-lang`, `--window-size`, `--force-device-scale-factor`, `--user-agent`, "
                    "`--disable-blink-features=AutomationControlled`, `--hide-scrollbars`, `--force-dark-mode`, "
                    "`--start-maximized` (any other switch belongs in the daemon's `chromium_args`)"),
    },
}

MESSAGE: dict[str, Key] = {
    "pattern": Key("regex", None, "a regular expression (JavaScript syntax, case-insensitive); named groups `wait` "
                   "with `unit`, or `clock`, capture a stated wait (a pattern, a selector or both)"),
    "selector": Key("selector", "", "an element that is the message (an error badge, an error-styled toast): a visible match "
                    "inside `where` that is new, newly shown or changed since the send; with `pattern`, its text must match too"),
    "class": Key("choice", None, "the failure class: " + ", ".join(CLASSES), choices=CLASSES, required=True),
    "where": Key("choice", "result", "what is searched, only what is new or changed since the send: `result` (the reply, "
                 "`result.scope` and open dialogs), `answer` (the reply: `result.answer`, read whole), `page` (the whole "
                 "page, sidebars and other conversations' toasts included: an explicit choice), `title` or `url`",
                 choices=("result", "answer", "page", "title", "url")),
    "wait_unit": Key("choice", "seconds", "the unit of a `wait` capture when there is no `unit` capture",
                     choices=("seconds", "minutes", "hours")),
    "wait_s": Key("float", None, "the wait when nothing is captured (rate_limit)"),
    "reload": Key("bool", False, "reload the page before the next prompt"),
}


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def builtin_text(name: str) -> str:
    if name not in builtin_names():
        raise BadArgs(f"unknown site '{name}' (built-in: {', '.join(builtin_names())}; "
                      "or give a profile file: --site path/to/site.toml)")
    return (BUILTIN_DIR / f"{name}.toml").read_text(encoding="utf-8")


def builtin(name: str) -> dict[str, Any]:
    return parse(builtin_text(name), f"{name}.toml")


def resolve(site: str, text: str | None = None, filename: str | None = None) -> dict[str, Any]:
    """A checked profile: the built-in one named `site`, or the one in `text` (a file the client read)."""
    if text is None:
        return builtin(site)
    return parse(text, filename or f"{site}.toml")


def parse(text: str, source: str) -> dict[str, Any]:
    """Parse and check profile TOML; ProfileError lists every problem, each naming its key."""
    if len(text) > MAX_TEXT:
        raise ProfileError(source, [f"the file is over {MAX_TEXT // 1024} KiB; a profile is a few dozen lines"])
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, [f"not valid TOML: {exc}"]) from None
    stem = Path(source).stem
    return normalize(raw, source, default_name=stem if _NAME.fullmatch(stem) else "site")


def normalize(raw: dict[str, Any], source: str = "profile", default_name: str = "site") -> dict[str, Any]:
    """Check a raw profile table and fill in defaults; idempotent on its own output."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    known = set(SCHEMA[""]) | {s for s in SCHEMA if s} | {"messages"}
    for name in raw:
        if name not in known:
            problems.append(_unknown(name, known))
    for section, keys in SCHEMA.items():
        table = raw if not section else raw.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"key '{section}' must be a table ([{section}])")
            table = {}
        values = _table(section, keys, table, problems, top=not section)
        if section:
            out[section] = values
        else:
            out.update(values)
    messages = raw.get("messages", [])
    out["messages"] = []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        problems.append("key 'messages' must be an array of tables ([[messages]])")
    else:
        for i, entry in enumerate(messages):
            out["messages"].append(_table(f"messages[{i}]", MESSAGE, entry, problems))
    if out.get("name") is None:
        out["name"] = default_name
    _cross_checks(out, problems)
    if problems:
        raise ProfileError(source, problems)
    return out


def _table(section: str, keys: dict[str, Key], table: dict[str, Any], problems: list[str], top: bool = False) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, key in keys.items():
        path = f"{section}.{name}" if section else name
        if name in table and table[name] is None and key.default is None and not key.required:
            values[name] = None  # an optional key without a value, as normalize() itself writes it
        elif name in table:
            problem = _problem(key, table[name])
            if problem:
                problems.append(f"key '{path}' {problem}")
            values[name] = table[name] if not problem else copy.deepcopy(key.default)
        elif key.required:
            problems.append(f"key '{path}' is missing: {key.doc}")
        else:
            values[name] = copy.deepcopy(key.default)
    if not top:
        for name in table:
            if name not in keys:
                problems.append(_unknown(f"{section}.{name}", {f"{section}.{k}" for k in keys}))
    return values


def _unknown(path: str, known: set[str]) -> str:
    close = difflib.get_close_matches(path, sorted(known), n=1)
    return f"unknown key '{path}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def _problem(key: Key, value: Any) -> str | None:
    """Why `value` is wrong for `key`, or None."""
    kind = key.kind
    if kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if kind in ("float", "int"):
        if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)):
            return "must be an integer" if kind == "int" else "must be a number"
        if math.isnan(value) or value < key.least:  # TOML can spell nan
            return f"must be at least {key.least:g}, not {value}"
        return None
    if kind == "vars":
        if not isinstance(value, dict):
            return "must be a table of names and default values, e.g. { space = \"demo\" }"
        for name, default in value.items():
            problem = var_problem(name, default, allow_empty=True)
            if problem:
                return problem
        return None
    if kind in ("selectors", "strs", "names", "choices", "regexes", "switches"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "must be a list of strings"
        single = {"selectors": "selector", "names": "name", "choices": "choice", "regexes": "regex",
                  "switches": "switch"}.get(kind)
        for i, item in enumerate(value):
            problem = _problem(Key(single, None, "", key.choices), item) if single else None
            if problem:
                return f"item {i + 1} ({item!r}) {problem}"
        return None
    if not isinstance(value, str):
        return "must be a string"
    if kind == "choice":
        return None if value in key.choices else f"must be one of {', '.join(key.choices)}, not {value!r}"
    if kind == "name":
        return None if _NAME.fullmatch(value) else "must be letters, digits, '.', '_' or '-' (up to 64)"
    if kind == "selector":
        return selector_problem(value) if value else None
    if kind == "regex":
        return regex_problem(value) if value else None
    if kind == "url":
        return url_problem(value)
    if kind == "probe":
        return probe_url_problem(value) if value else None
    if kind == "switch":
        return switch_problem(value)
    if kind == "key":
        return key_problem(value) if value else None
    return None


def selector_problem(selector: str) -> str | None:
    """A light syntax check of a CSS selector (the browser has the last word): balanced brackets and quotes."""
    if len(selector) > 500 or "\n" in selector:
        return "is not a plausible CSS selector (too long, or a line break)"
    pairs = {"]": "[", ")": "("}
    stack: list[str] = []
    quote_char = ""
    escaped = False
    for ch in selector:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote_char:
            if ch == quote_char:
                quote_char = ""
        elif ch in "'\"":
            quote_char = ch
        elif ch in "[(":
            stack.append(ch)
        elif ch in "])":
            if not stack or stack.pop() != pairs[ch]:
                return f"is not a valid CSS selector (unbalanced '{ch}')"
    if quote_char or stack:
        return "is not a valid CSS selector (an unclosed quote or bracket)"
    if selector.strip()[-1] in ",>+~":
        return "is not a valid CSS selector (it ends with a combinator)"
    return None


def js_regex_to_python(pattern: str) -> str:
    """JavaScript named groups `(?<name>…)` to Python's `(?P<name>…)`; the rest of the common subset is shared."""
    return re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern)


def regex_problem(pattern: str) -> str | None:
    if "(?P" in pattern:
        return "uses Python's (?P<name>…); write JavaScript's (?<name>…)"
    if re.match(r"\(\?[aiLmsux]+\)", pattern):
        return "starts with an inline flag, which JavaScript does not have (matching is case-insensitive anyway)"
    try:
        re.compile(js_regex_to_python(pattern), re.I)
    except re.error as exc:
        return f"is not a valid regular expression: {exc}"
    return None


def key_problem(key: str) -> str | None:
    parts = key.split("+")
    if not all(_KEY_PART.fullmatch(p) for p in parts) or any(p not in _MODIFIERS for p in parts[:-1]):
        return "must be a key name such as Enter, optionally after Control+, Shift+, Alt+ or Meta+"
    return None


def var_problem(name: Any, value: Any, allow_empty: bool = False) -> str | None:
    """Why a start-URL variable's name or value is unusable, or None."""
    if not isinstance(name, str) or not _VAR_NAME.fullmatch(name) or name in PLACEHOLDERS:
        return f"variable {name!r} must be a name (letters, digits, '_'; not {' or '.join(PLACEHOLDERS)})"
    if not isinstance(value, str):
        return f"variable '{name}' must be a string"
    if value == "" and allow_empty:
        return None
    if not _VAR_VALUE.fullmatch(value):
        return f"variable '{name}' = {value!r} must be 1 to 300 URL characters (letters, digits, . _ ~ : / % + = , [ ] -)"
    if name == "port" and not (value.isdigit() and 0 < int(value) < 65536):
        return f"variable 'port' = {value!r} must be a TCP port (1 to 65535)"
    return None


def url_fields(url: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(url) if f is not None]


def url_problem(url: str) -> str | None:
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(url) if f is not None]
    except ValueError as exc:
        return f"has a bad placeholder ({exc}); write a literal brace as {{{{ or }}}}"
    for name, spec, conv in fields:
        if not _VAR_NAME.fullmatch(name) or spec or conv:
            return f"has a bad placeholder {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} (a name: letters, digits, '_')"
    if not url.startswith(("http://", "https://", "{demo}")):
        return "must start with http://, https:// or {demo} (variables go after the scheme: http://{host}:{port}/)"
    if url.startswith("{demo}"):
        # Anything but a path after the demo's address could name another host: "{demo}@elsewhere/".
        return None if url[6:7] in ("", "/", "?", "#") else "must go on with /, ? or # after {demo}"
    netloc = urlsplit(url).netloc
    if "{" in netloc and "{job}" not in netloc:
        return None  # a variable names the host: the URL is checked whole once a job binds its value
    return http_url_problem(url)


def http_url_problem(url: str) -> str | None:
    """Why an http(s) URL is not one whose host Python and a browser read alike, or None."""
    if _UNSAFE_URL_CHARS.search(url):
        return "must not hold spaces, control characters or backslashes"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not _AUTHORITY.fullmatch(parts.netloc):
        return (f"must name a plain host (and port) after {parts.scheme}://, not {parts.netloc!r}: "
                "letters, digits, '-' and '.' (xn-- for international names) or an [IPv6] address; no user@")
    return None


def probe_url_problem(url: str) -> str | None:
    """A probe URL is a path on the start URL's site, or an http(s) URL checked like one."""
    if url.startswith("/") and not url.startswith("//"):
        return "must not hold spaces, control characters or backslashes" if _UNSAFE_URL_CHARS.search(url) else None
    if url.startswith(("http://", "https://")):
        return http_url_problem(url)
    return "must be a path starting with / or an http(s) URL"


def switch_problem(arg: str) -> str | None:
    """Why a Chromium argument may not be set by a site profile, or None when it is on the allow-list."""
    name, has_value, value = arg.partition("=")
    allowed = SITE_SWITCHES.get(name) if name.startswith("--") else None
    if allowed is None:
        return ("is not allowed in a site profile (it may set " + ", ".join(SITE_SWITCHES) + "); "
                "the operator may set it in chromium_args")
    pattern, usage = allowed
    if (not pattern and has_value) or (pattern and not (has_value and re.fullmatch(pattern, value))):
        return f"must be written {usage}"
    return None


def _cross_checks(p: dict[str, Any], problems: list[str]) -> None:
    if p["conversation"]["new"] == "click" and not p["conversation"]["selector"]:
        problems.append("key 'conversation.selector' is missing: conversation.new = \"click\" clicks it")
    if "user_turn" in p["submit"]["confirm"] and not p["submit"]["user_turn"]:
        problems.append("key 'submit.user_turn' is missing: submit.confirm lists \"user_turn\"")
    if not p["submit"]["selectors"] and not p["submit"]["key"]:
        problems.append("key 'submit.selectors' is empty and 'submit.key' too: nothing would send the prompt")
    if bool(p["login"]["probe_url"]) != bool(p["login"]["probe_pattern"]):
        problems.append("keys 'login.probe_url' and 'login.probe_pattern' go together")
    if p["result"]["answer_in_place"] and not p["result"]["answer"]:
        problems.append("key 'result.answer_in_place' is true but 'result.answer' is not set")
    if isinstance(p.get("start_url"), str) and not url_problem(p["start_url"]):
        declared = set(p["vars"]) | set(STANDARD_VARS) | set(PLACEHOLDERS)
        for name in url_fields(p["start_url"]):
            if name not in declared:
                problems.append(f"key 'start_url' has an unknown placeholder {{{name}}} (known: "
                                f"{', '.join('{' + n + '}' for n in (*PLACEHOLDERS, *STANDARD_VARS, *p['vars']))}; "
                                f"declare a variable in 'vars')")
    for i, m in enumerate(p["messages"]):
        if m.get("where") == "answer" and not p["result"]["answer"]:
            problems.append(f"key 'messages[{i}].where' is \"answer\" but 'result.answer' is not set")
        if not m.get("pattern") and not m.get("selector") and not any(f"'messages[{i}].pattern'" in x for x in problems):
            problems.append(f"key 'messages[{i}].pattern' is missing: a message needs a pattern, a selector or both")
        if m.get("selector") and m.get("where") in ("title", "url"):
            problems.append(f"key 'messages[{i}].selector' cannot go with where = \"{m['where']}\"")


def needs_demo(profile: dict[str, Any]) -> bool:
    return "{demo}" in profile["start_url"]


def bind_vars(profile: dict[str, Any], given: dict[str, Any], configured: dict[str, str]) -> dict[str, Any]:
    """The profile with its start-URL variables' values for one job: given (--var), else configured (site_vars), else
    the profile's defaults. Stored on the job, so a queued job keeps the URL it was submitted with."""
    used = [n for n in url_fields(profile["start_url"]) if n not in PLACEHOLDERS]
    known = set(profile["vars"]) | set(STANDARD_VARS)
    for name, value in given.items():
        if name not in known:
            raise BadArgs(f"unknown start-URL variable '{name}' (site '{profile['name']}' knows: "
                          f"{', '.join(sorted(known))}; declare others in the profile's 'vars')")
        problem = var_problem(name, value if isinstance(value, str) else str(value))
        if problem:
            raise BadArgs(problem)
    values = {}
    for name in sorted(set(used) | set(profile["vars"])):
        value = str(given.get(name, "")) or configured.get(name, "") or profile["vars"].get(name, "")
        if not value and name in used:
            raise BadArgs(f"site '{profile['name']}' needs a value for {{{name}}} in its start_url: give --var {name}=VALUE, "
                          f"or set it in the daemon config's site_vars, or a default in the profile's 'vars'")
        values[name] = value
    return profile | {"vars": values}


def start_url(profile: dict[str, Any], job_id: str, knobs: dict[str, str], demo_base: str | None) -> str:
    """The profile's start URL for one job: placeholders and variables filled, the job's knobs added to the query."""
    values = {name: profile.get("vars", {}).get(name, "") for name in url_fields(profile["start_url"])}
    missing = [name for name, value in values.items() if not value and name not in PLACEHOLDERS]
    if missing:
        raise BadArgs(f"site '{profile['name']}' has no value for {{{missing[0]}}} in its start_url")
    url = profile["start_url"].format_map(values | {"demo": demo_base or "", "job": quote(job_id, safe="")})
    if not knobs:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True)) | {str(k): str(v) for k, v in knobs.items()}
    return urlunsplit(parts._replace(query=urlencode(query)))


def explain(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """Every key of a checked profile: its value here, whether that is the default, and what it means."""
    rows = []
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            value = profile[name] if not section else profile[section][name]
            rows.append({"key": f"{section}.{name}" if section else name, "value": _toml(value).strip("`"),
                         "default": not key.required and value == key.default, "doc": key.doc})
    for i, entry in enumerate(profile["messages"]):
        for name, key in MESSAGE.items():
            value = entry.get(name)
            rows.append({"key": f"messages[{i}].{name}", "value": _toml(value).strip("`"),
                         "default": not key.required and value == key.default, "doc": key.doc})
    return rows


def describe_markdown() -> str:
    """The profile keys as a Markdown table (pasted into the README)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for section, keys in [*SCHEMA.items(), ("[[messages]]", MESSAGE)]:
        for name, key in keys.items():
            path = name if not section else (f"{section}.{name}" if not section.startswith("[[") else f"{section} {name}")
            default = "required" if key.required else _toml(key.default)
            rows.append(f"| `{path}` | {default} | {key.doc} |")
    return "\n".join(rows)


def _toml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f'{k} = "{v}"' for k, v in value.items()) + "}`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"
