"""Unit tests for tabfleetd.sites.profiles (checking site profiles) and the wait a matched message states."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.sites import profiles
from tabfleetd.errors import BadArgs, ProfileError
from tabfleetd.sites.base import captured_wait, unit_seconds, until_clock
from tabfleetd.sites.profile import page_config

MINIMAL = """
start_url = "https://images.example/"
[input]
selectors = ["#box"]
[result]
selector = "img"
"""


def problems(text: str, source: str = "site.toml") -> list[str]:
    with pytest.raises(ProfileError) as caught:
        profiles.parse(text, source)
    assert caught.value.code == 1403 and str(caught.value).startswith(f"{source}: ")
    return caught.value.problems


def test_builtins_are_valid_and_normalize_is_idempotent() -> None:
    """Every built-in profile passes the checks, and checking a checked profile changes nothing."""
    assert profiles.builtin_names() == ["chatgpt", "demo"]
    for name in profiles.builtin_names():
        profile = profiles.builtin(name)
        assert profile["name"] == name
        assert profiles.normalize(profile, name) == profile


def test_minimal_profile_gets_every_default_and_the_file_name() -> None:
    """A profile with only the required keys gets each default, and its name from the file."""
    profile = profiles.parse(MINIMAL, "my-site.toml")
    assert profile["name"] == "my-site"
    assert profile["conversation"]["new"] == "navigate"
    assert profile["input"] == {"selectors": ["#box"], "method": "insert_text", "key_delay_ms": 0.0, "clear": True}
    assert profile["submit"]["key"] == "Enter" and profile["result"]["count"] == 1 and profile["messages"] == []
    assert profile["browser"] == {"headless": True, "args": []}


def test_chatgpt_profile_has_the_known_selectors_and_messages() -> None:
    """The chatgpt profile carries the issue's selectors, dedupe by file id, a challenge title and runs headed."""
    p = profiles.builtin("chatgpt")
    assert "#prompt-textarea" in p["input"]["selectors"] and p["submit"]["key"] == "Enter"
    assert "NOT VERIFIED LIVE" in profiles.builtin_text("chatgpt")
    # One #composer-submit-button changes role: only its send role is clicked, its stop role is busy.
    assert all("send" in s.lower() for s in p["submit"]["selectors"])
    assert '#composer-submit-button[data-testid="stop-button"]' in p["busy"]["selectors"]
    assert '[data-testid^="image-gen-loading-state"]' in p["busy"]["selectors"]
    assert p["result"]["scope"] == "main" and p["result"]["selector"].startswith('img[alt^="Generated image"]:not(')
    assert 'section[data-turn="assistant"]' in p["result"]["answer"]
    assert re.search(p["result"]["dedupe"], "/backend-api/estuary/content?id=file_00000000abc&ts=1").group(0) == "file_00000000abc"
    assert p["download"]["method"] == "fetch" and p["browser"]["headless"] is False
    classes = {m["class"] for m in p["messages"]}
    assert classes == {"rate_limit", "permanent", "transient", "challenge"}
    assert any(m["where"] == "title" and m["class"] == "challenge" for m in p["messages"])
    assert not any(m["where"] == "page" for m in p["messages"]), "the whole page holds sidebar titles made from prompts"


@pytest.mark.parametrize("message, kind, wait", [
    ("You're generating images too quickly. To ensure the best experience for everyone, we have rate limits in place. "
     "Please wait for 2 minutes before generating more images.", "rate_limit", 120.0),
    ("You've hit the Plus plan limit for image generations requests. You can create more images when the limit "
     "resets in 23 hours and 5 minutes.", "rate_limit", 23 * 3600.0),
    ("This image generation request did not follow our content policy and may violate our content policies.", "permanent", None),
    ("This image generation request did not follow our content policy.", "permanent", None),
    ("You're generating images too quickly. Please wait for an hour before generating more images.", "rate_limit", 3600.0),
    ("You're generating images too quickly. Please try again in a minute.", "rate_limit", 60.0),
    ("Something went wrong while generating the response.", "transient", None),
])
def test_chatgpt_messages_classify_the_known_texts(message: str, kind: str, wait: float | None) -> None:
    """The first chatgpt message pattern that matches a known text gives its class and stated wait."""
    p = profiles.builtin("chatgpt")
    entry, match = next((m, re.search(profiles.js_regex_to_python(m["pattern"]), message, re.I))
                        for m in p["messages"] if m["where"] != "title"
                        and re.search(profiles.js_regex_to_python(m["pattern"]), message, re.I))
    assert entry["class"] == kind
    if kind == "rate_limit":
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        assert captured_wait(groups, entry["wait_unit"], entry["wait_s"], message) == wait


def test_problems_name_their_keys() -> None:
    """Every problem in a profile is reported at once, each naming its key."""
    found = problems("""
start_url = "ftp://x/"
[input]
selectors = ["#a["]
metod = "keys"
[submit]
key = "Ctrl+Enter"
confirm = ["user_turn", "sent"]
[result]
count = 0
min_px = -1
[[messages]]
pattern = "(?P<wait>\\\\d+)"
class = "bad"
where = "answer"
""")
    assert found == [
        "key 'start_url' must start with http://, https:// or {demo} (variables go after the scheme: http://{host}:{port}/)",
        "key 'input.selectors' item 1 ('#a[') is not a valid CSS selector (an unclosed quote or bracket)",
        "unknown key 'input.metod' (did you mean 'input.method'?)",
        "key 'submit.key' must be a key name such as Enter, optionally after Control+, Shift+, Alt+ or Meta+",
        "key 'submit.confirm' item 2 ('sent') must be one of composer_empty, user_turn, busy, not 'sent'",
        "key 'result.selector' is missing: a result image (an img element)",
        "key 'result.count' must be at least 1, not 0",
        "key 'result.min_px' must be at least 0, not -1",
        "key 'messages[0].pattern' uses Python's (?P<name>…); write JavaScript's (?<name>…)",
        "key 'messages[0].class' must be one of transient, rate_limit, permanent, auth, challenge, not 'bad'",
        "key 'messages[0].where' is \"answer\" but 'result.answer' is not set",
    ]


@pytest.mark.parametrize("extra, problem", [
    ('[conversation]\nnew = "click"\n', "key 'conversation.selector' is missing"),
    ('[submit]\nselectors = []\nkey = ""\n', "nothing would send the prompt"),
    ('[login]\nprobe_url = "/api/session"\n', "'login.probe_url' and 'login.probe_pattern' go together"),
    ('[login]\nurls = ["(unclosed"]\n', "key 'login.urls' item 1 ('(unclosed') is not a valid regular expression"),
    ('[timeouts]\nload_s = "soon"\n', "key 'timeouts.load_s' must be a number"),
    ('[browser]\nheadless = "no"\n', "key 'browser.headless' must be true or false"),
    ('[browser]\nargs = "--x"\n', "key 'browser.args' must be a list of strings"),
    ('knobs = ["ok", "not ok"]\n', "key 'knobs' item 2 ('not ok') must be letters, digits"),
    ('conversation = 3\n', "key 'conversation' must be a table ([conversation])"),
    ('[[messages]]\nclass = "transient"\n', "key 'messages[0].pattern' is missing: a message needs a pattern, a selector"),
    ('[[messages]]\nselector = ".badge"\nclass = "transient"\nwhere = "title"\n', "'messages[0].selector' cannot go with"),
    ('[[messages]]\npattern = "x"\nclass = "transient"\nwhere = "sidebar"\n', "must be one of result, answer, page"),
    ('+answer_in_place = true\n', "'result.answer_in_place' is true but 'result.answer' is not"),
    ('+repeat = "always"\n', "key 'result.repeat' must be one of never, touched, signal"),
    ('vars = ["host"]\n', "key 'vars' must be a table"),
    ('vars = { "my var" = "x" }\n', "variable 'my var' must be a name"),
    ('vars = { port = "http" }\n', "variable 'port' = 'http' must be a TCP port"),
    ('messages = "x"\n', "key 'messages' must be an array of tables ([[messages]])"),
    ('colour = "blue"\n', "unknown key 'colour'"),
])
def test_single_problems(extra: str, problem: str) -> None:
    """Each kind of mistake is caught and named."""
    if extra.startswith("+"):  # more keys in MINIMAL's last table, [result]
        text = MINIMAL + extra[1:]
    else:
        text = MINIMAL.replace('start_url', extra + 'start_url', 1) if not extra.startswith("[") else MINIMAL + extra
    assert any(problem in p for p in problems(text)), problems(text)


def test_start_url_placeholders() -> None:
    """start_url accepts {demo}, {job}, {host}, {port} and declared variables, and needs http(s) or {demo}."""
    assert "unknown placeholder {prot}" in problems(MINIMAL.replace("https://images.example/", "https://x/{prot}"))[0]
    assert "bad placeholder" in problems(MINIMAL.replace("https://images.example/", "https://x/{"))[0]
    assert "bad placeholder {port!r}" in problems(MINIMAL.replace("https://images.example/", "https://x/{port!r}"))[0]
    assert "must start with" in problems(MINIMAL.replace("https://images.example/", "{host}/x"))[0]
    demo = profiles.builtin("demo")
    assert profiles.needs_demo(demo) and not profiles.needs_demo(profiles.builtin("chatgpt"))
    url = profiles.start_url(demo, "j/1", {"latency": "0.5", "scope": "mine"}, "http://127.0.0.1:8")
    assert url == "http://127.0.0.1:8/?scope=mine&latency=0.5"
    assert profiles.start_url(demo, "j/1", {}, "http://127.0.0.1:8") == "http://127.0.0.1:8/?scope=j%2F1"


VARS = MINIMAL.replace('start_url = "https://images.example/"', 'start_url = "http://{host}:{port}/{space}/"\nvars = { space = "main", port = "7860" }')


def test_start_url_variables_come_from_the_job_then_the_config_then_the_profile() -> None:
    """{host}, {port} and declared variables take a job's --var, else the daemon's site_vars, else the profile's default."""
    profile = profiles.parse(VARS, "gr.toml")
    bound = profiles.bind_vars(profile, {"host": "10.0.0.5"}, {"port": "9000", "host": "10.0.0.9"})
    assert profiles.start_url(bound, "j1", {}, None) == "http://10.0.0.5:9000/main/"
    assert profiles.start_url(profiles.bind_vars(profile, {"space": "x"}, {"host": "h"}), "j1", {"k": "v"}, None) == \
        "http://h:7860/x/?k=v"
    assert profiles.normalize(bound, "stored") == bound, "the bound profile is stored on the job and checked again"
    with pytest.raises(BadArgs, match=r"needs a value for \{host\}.*--var host=VALUE.*site_vars"):
        profiles.bind_vars(profile, {}, {})
    with pytest.raises(BadArgs, match="unknown start-URL variable 'hots'"):
        profiles.bind_vars(profile, {"hots": "x"}, {})
    with pytest.raises(BadArgs, match="must be 1 to 300 URL characters"):
        profiles.bind_vars(profile, {"host": "evil.example/#"}, {})
    demo = profiles.builtin("demo")
    assert profiles.bind_vars(demo, {}, {"host": "unused"})["vars"] == {}, "variables a profile does not use are not stored"


def test_explain_lists_every_key_with_its_value_and_meaning() -> None:
    """`sites check --explain` rows: every schema key and every message key, the default flagged, the doc attached."""
    rows = {r["key"]: r for r in profiles.explain(profiles.builtin("demo"))}
    for section, keys in profiles.SCHEMA.items():
        for name, key in keys.items():
            row = rows[f"{section}.{name}" if section else name]
            assert row["doc"] == key.doc
    assert rows["result.repeat"] == {"key": "result.repeat", "value": '"touched"', "default": True,
                                     "doc": profiles.SCHEMA["result"]["repeat"].doc}
    assert rows["busy.settle_s"]["value"] == "0" and rows["busy.settle_s"]["default"] is False
    assert rows["messages[0].where"]["value"] == '"answer"' and not rows["messages[0].where"]["default"]


def test_bad_toml_and_oversized_text() -> None:
    """A TOML syntax error or a huge file is one clear problem."""
    assert problems("[input\n")[0].startswith("not valid TOML: ")
    assert "KiB" in problems("#" * (profiles.MAX_TEXT + 1))[0]


def test_resolve_builtin_or_text() -> None:
    """resolve() takes a built-in's name, or a file's text (named after the file unless it names itself)."""
    assert profiles.resolve("demo")["name"] == "demo"
    assert profiles.resolve("ignored", MINIMAL, "shop.toml")["name"] == "shop"
    assert profiles.resolve("ignored", 'name = "own"\n' + MINIMAL, "shop.toml")["name"] == "own"
    with pytest.raises(BadArgs, match="unknown site 'nowhere' .built-in: chatgpt, demo"):
        profiles.resolve("nowhere")


def test_js_named_groups_become_python_groups() -> None:
    """(?<name>…) is checked as Python's (?P<name>…); lookbehinds stay as they are."""
    assert profiles.js_regex_to_python(r"(?<=in )(?<wait>\d+)(?<!x)") == r"(?<=in )(?P<wait>\d+)(?<!x)"
    assert profiles.regex_problem(r"(?<=in )(?<wait>\d+)") is None
    assert "inline flag" in (profiles.regex_problem("(?i)abc") or "")


@pytest.mark.parametrize("selector, ok", [
    ('button[data-testid="send-button"]', True), ('img[alt^="Generated image"]', True), ("a:not(.b)", True),
    (r"#a\[b", True), ("div[", False), ("div)", False), ('a[title="x]', False), ("main >", False),
])
def test_selector_check(selector: str, ok: bool) -> None:
    """The light selector check catches unbalanced brackets and quotes and a trailing combinator."""
    assert (profiles.selector_problem(selector) is None) == ok


def test_page_config_uses_milliseconds() -> None:
    """The page scripts get times in milliseconds and only what they need."""
    cfg = page_config(profiles.builtin("chatgpt"))
    assert cfg["busy"]["settle_ms"] == 6000 and cfg["result"]["stable_ms"] == 2000 and cfg["sent_ms"] == 10000
    assert cfg["download"] == "fetch" and cfg["result"]["repeat"] == "touched" and cfg["result"]["answer_in_place"] is False
    assert cfg["messages"][0] == {"pattern": profiles.builtin("chatgpt")["messages"][0]["pattern"], "selector": "",
                                  "cls": "rate_limit", "where": "answer"}


def test_old_stored_profiles_get_the_new_keys_and_keep_their_where() -> None:
    """A profile stored on a job before this version is filled in: new keys get defaults, stored values stay."""
    stored = profiles.builtin("demo")
    for key in ("repeat", "answer_in_place"):
        del stored["result"][key]
    del stored["vars"]
    stored["messages"] = [{k: v for k, v in m.items() if k != "selector"} | {"where": "page"} for m in stored["messages"]]
    filled = profiles.normalize(stored, "the job's profile")
    assert filled["result"]["repeat"] == "touched" and filled["vars"] == {}
    assert all(m["where"] == "page" and m["selector"] == "" for m in filled["messages"])


@pytest.mark.parametrize("unit, seconds", [("s", 1), ("seconds", 1), ("min", 60), ("Minutes", 60), ("h", 3600),
                                           ("hours", 3600), ("day", 86400)])
def test_unit_seconds(unit: str, seconds: float) -> None:
    """Units as sites write them."""
    assert unit_seconds(unit) == seconds


NOW = datetime.datetime(2026, 11, 28, 15, 0, 0)


@pytest.mark.parametrize("text, seconds", [
    ("4:17 PM", 77 * 60), ("4:17 p.m.", 77 * 60), ("16:17", 77 * 60), ("4 PM", 3600),
    ("2:00 PM", 23 * 3600), ("12:30 AM", 9.5 * 3600), ("nonsense", None), ("25:00", None),
])
def test_until_clock(text: str, seconds: float | None) -> None:
    """A clock time is the next time it comes round, today or tomorrow."""
    assert until_clock(text, NOW) == seconds


@pytest.mark.parametrize("groups, unit, fallback, message, wait", [
    ({"wait": "2", "unit": "minutes"}, "seconds", None, "", 120.0),
    ({"wait": "3"}, "hours", None, "", 10800.0),
    ({"clock": "4:17 PM"}, "seconds", 60.0, "", 77 * 60.0),
    ({}, "seconds", 300.0, "too many requests", 300.0),
    ({}, "seconds", None, "please try again in 45 seconds", 45.0),
    ({}, "seconds", None, "too many requests", None),
])
def test_captured_wait(groups: dict[str, Any], unit: str, fallback: float | None, message: str, wait: float | None) -> None:
    """The stated wait: a clock capture, else a number in its unit, else the entry's wait_s, else one in the text."""
    assert captured_wait(groups, unit, fallback, message, NOW) == wait


def test_describe_markdown_lists_every_key() -> None:
    """The README's profile table is generated from the schema: every key appears once."""
    table = profiles.describe_markdown()
    for section, keys in profiles.SCHEMA.items():
        for name in keys:
            assert f"| `{section + '.' if section else ''}{name}` |" in table
    for name in profiles.MESSAGE:
        assert f"| `[[messages]] {name}` |" in table


def test_readme_profile_table_is_the_schema() -> None:
    """The README's "Profile keys" table is exactly the generated one, so every key is explained there."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    assert profiles.describe_markdown() in readme


def test_readme_examples_are_valid_profiles() -> None:
    """Both worked examples in the README pass the checks; the form one is the Gradio test's profile."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r"```toml\n(.*?)```", readme.split("### Two worked examples", 1)[1], re.S)[:2]
    chat, form = (profiles.parse(text, "example.toml") for text in examples)
    assert chat["submit"]["confirm"] == ["composer_empty", "user_turn"] and form["submit"]["confirm"] == ["busy"]
    stored = profiles.parse((Path(__file__).resolve().parents[3] / "tests/e2e/sites/gradio.toml").read_text(), "g.toml")
    assert profiles.normalize(form | {"description": stored["description"]}) == stored


@pytest.mark.parametrize("arg", ["--lang=de-DE", "--accept-lang=de-DE,de", "--window-size=1280,800",
                                 "--force-device-scale-factor=1.5", "--user-agent=Mozilla/5.0 (X11; Linux x86_64)",
                                 "--disable-blink-features=AutomationControlled", "--hide-scrollbars",
                                 "--force-dark-mode", "--start-maximized"])
def test_browser_args_on_the_allow_list_pass(arg: str) -> None:
    """Switches that only change how pages see the browser may be set by a profile."""
    assert profiles.switch_problem(arg) is None
    assert profiles.parse(MINIMAL + f"[browser]\nargs = [{arg!r}]\n", "s.toml")["browser"]["args"] == [arg]


@pytest.mark.parametrize("arg", ["--renderer-cmd-prefix=/tmp/evil.sh", "--utility-cmd-prefix=/tmp/evil.sh",
                                 "--gpu-launcher=/tmp/evil.sh", "--remote-debugging-port=9222", "--proxy-server=x:1",
                                 "--load-extension=/tmp/x", "--user-data-dir=/tmp/other", "--enable-features=X",
                                 "--no-sandbox", "--", "-lang=de", "--LANG=de", "file:///etc/passwd",
                                 "http://127.0.0.1:8470/"])
def test_browser_args_off_the_allow_list_are_refused_naming_the_key(arg: str) -> None:
    """Any other switch (or a URL, or the end of switches) is the operator's: refused, naming the key and item."""
    found = problems(MINIMAL + f"[browser]\nargs = ['--lang=de', {arg!r}]\n")
    assert found == [f"key 'browser.args' item 2 ({arg!r}) is not allowed in a site profile (it may set "
                     + ", ".join(profiles.SITE_SWITCHES) + "); the operator may set it in chromium_args"]


@pytest.mark.parametrize("arg, usage", [
    ("--lang=de;x", "--lang=LANGUAGE"), ("--lang", "--lang=LANGUAGE"), ("--window-size=big", "--window-size=WIDTH,HEIGHT"),
    ("--force-device-scale-factor=50", "N up to 4"), ("--user-agent=a\nb", "printable ASCII"),
    ("--disable-blink-features=AutomationControlled,Other", "=AutomationControlled"), ("--hide-scrollbars=0", "--hide-scrollbars"),
])
def test_allowed_switches_with_bad_values_say_how_to_write_them(arg: str, usage: str) -> None:
    """An allowed switch with a value outside its pattern is refused with the way to write it."""
    problem = profiles.switch_problem(arg)
    assert problem is not None and problem.startswith("must be written ") and usage in problem


@pytest.mark.parametrize("url, problem", [
    ("https://user@images.example/", "must name a plain host"),
    ("https://images.example\\\\@127.0.0.1/", "backslashes"),  # TOML's escape: one backslash
    ("https://images .example/", "spaces"),
    ("https://%31%32%37.0.0.1/", "must name a plain host"),
    ("https://{job}.images.example/", "must name a plain host"),
    ("{demo}@127.0.0.1:8470/", "must go on with /, ? or # after {demo}"),
    ("{demo}.evil.example/", "must go on with /, ? or # after {demo}"),
])
def test_start_url_must_name_its_host_plainly(url: str, problem: str) -> None:
    """A start URL whose host a browser could read differently from the daemon's check is refused."""
    found = problems(MINIMAL.replace("https://images.example/", url))
    assert found[0].startswith("key 'start_url' ") and problem in found[0], found


@pytest.mark.parametrize("probe, ok", [("/api/session", True), ("https://images.example/api/session", True),
                                       ("//evil.example/x", False), ("javascript:alert(1)", False),
                                       ("https://a@b.example/", False), ("api/session", False)])
def test_probe_url_is_a_path_or_a_plain_http_url(probe: str, ok: bool) -> None:
    """login.probe_url is a same-site path or an http(s) URL with a plain host; anything else names the key."""
    text = MINIMAL + f'[login]\nprobe_url = "{probe}"\nprobe_pattern = "user"\n'
    if ok:
        assert profiles.parse(text, "s.toml")["login"]["probe_url"] == probe
    else:
        assert problems(text)[0].startswith("key 'login.probe_url' ")
