"""Site profiles through the real daemon and tabfleetctl: listing, checking, submitting a profile file,
a headed worker on its own Xvfb, and signing a worker in with `tabfleetctl login`."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import psutil
import pytest

from tabfleetd.sites import profiles
from tabfleetd.demo.demoimage import render_png
from tabfleetd.fleet.display import VirtualDisplay
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FIXTURE = Path(__file__).parent / "fixture.toml"
FORM = Path(__file__).parent / "form.toml"
LOCAL_SITES = {"site_networks": ["127.0.0.1/32"]}  # the fixture site listens on loopback, which profiles need allowed


def write_profile(path: Path, url: str, extra: str = "", source: Path = FIXTURE) -> Path:
    """A fixture profile (the chat's by default) pointed at `url`, with extra TOML sections."""
    text = re.sub(r"(?m)^start_url = .*$", f'start_url = "{url}"', source.read_text())
    path.write_text(text + "\n" + extra, encoding="utf-8")
    return path


def write_prompts(path: Path, prompts: list[str]) -> list[str]:
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return prompts


def check_images(out: Path, prompts: list[str]) -> None:
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt), prompt


def test_sites_list_show_check_and_login_without_a_display(make_daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sites` lists the built-ins, `sites show` prints one, `sites check` names each bad key, login needs a display."""
    monkeypatch.delenv("DISPLAY", raising=False)
    daemon = make_daemon(workers=1)
    listed = daemon.ctl("sites", check=True).stdout
    assert re.search(r"(?m)^chatgpt\s+https://chatgpt.com/\s+headed\s+navigate", listed) and re.search(r"(?m)^demo\s", listed)
    shown = daemon.ctl("sites", "show", "chatgpt", check=True).stdout
    assert shown == profiles.builtin_text("chatgpt")
    (daemon.work / "mine.toml").write_text(shown.replace('name = "chatgpt"', 'name = "mine"'))
    assert "mine.toml: ok (site 'mine'; checked by tabfleetctl and tabfleetd)" in daemon.ctl("sites", "check", "mine.toml", check=True).stdout
    explained = daemon.ctl("sites", "check", "--explain", "mine.toml", check=True).stdout
    for key in ("start_url", "vars", "submit.confirm", "result.repeat", "result.answer_in_place", "messages[0].selector"):
        assert re.search(rf"(?m)^[* ] {re.escape(key)} = ", explained), key
    assert '\n* busy.settle_s = 6\n' in explained and '\n  result.repeat = "touched"\n' in explained
    assert profiles.SCHEMA["result"]["repeat"].doc[:60] in explained.replace("\n    ", " ")
    (daemon.work / "vars.toml").write_text(shown.replace('start_url = "https://chatgpt.com/"',
                                                         'start_url = "http://{host}:{port}/"'))
    write_prompts(daemon.work / "v.txt", ["one"])
    novalue = daemon.ctl("submit", "v.txt", "--site", "vars.toml", "--var", "port=7860")
    assert novalue.returncode == 4 and "needs a value for {host}" in novalue.stderr
    typo = daemon.ctl("submit", "v.txt", "--site", "vars.toml", "--var", "hots=x")
    assert typo.returncode == 4 and "unknown start-URL variable 'hots'" in typo.stderr
    (daemon.work / "bad.toml").write_text(shown.replace("count = 1", "count = 0").replace("selector = 'img", "selecter = 'img"))
    bad = daemon.ctl("sites", "check", "bad.toml")
    assert bad.returncode == 1
    assert "bad.toml: key 'result.count' must be at least 1, not 0" in bad.stderr
    assert "unknown key 'result.selecter' (did you mean 'result.selector'?)" in bad.stderr
    assert "key 'result.selector' is missing" in bad.stderr
    (daemon.work / "broken.toml").write_text("[input\nselectors = 1\n")
    assert "not valid TOML" in daemon.ctl("sites", "check", "broken.toml").stderr
    write_prompts(daemon.work / "p.txt", ["one"])
    refused = daemon.ctl("submit", "p.txt", "--site", "bad.toml")
    assert refused.returncode == 4 and "key 'result.count'" in refused.stderr
    unknown = daemon.ctl("submit", "p.txt", "--site", "nowhere")
    assert unknown.returncode == 4 and "unknown site 'nowhere'" in unknown.stderr and "chatgpt, demo" in unknown.stderr
    login = daemon.ctl("login", "--worker", "1", "--site", "demo")
    assert login.returncode == 4 and "without DISPLAY" in login.stderr and "Xvfb will not do" in login.stderr
    daemon.stop()
    alone = daemon.ctl("sites", "check", "mine.toml")  # the checker is pure: tabfleetctl runs it without a daemon
    assert alone.returncode == 0 and "mine.toml: ok (site 'mine'; checked by tabfleetctl (no daemon answered))" in alone.stdout
    assert daemon.ctl("sites", "check", "bad.toml").returncode == 1


def test_submit_with_a_profile_file(make_daemon: Any, harness: Any) -> None:
    """`submit --site FILE.toml` sends the profile with the job; its knobs are the profile's; images are exact."""
    daemon = make_daemon(workers=2, config=LOCAL_SITES)
    write_profile(daemon.work / "fixture.toml", harness.site.url(editor="model", tag="file"))
    prompts = write_prompts(daemon.work / "p.txt", [f"a paper boat number {i}" for i in range(6)])
    result = daemon.ctl("submit", "p.txt", "--site", "fixture.toml", "--json", "--wait", check=True)
    job_id = json.loads(result.stdout.splitlines()[0])["job"]
    job = daemon.call("status", {"job": job_id})["jobs"][0]
    assert (job["state"], job["site"], job["done"]) == ("done", "fixture", 6)
    check_images(daemon.work / "tabfleet-out" / job_id, prompts)
    knob = daemon.ctl("submit", "p.txt", "--site", "fixture.toml", "--knob", "latency=1")
    assert knob.returncode == 4 and "unknown site knob 'latency' (known: none)" in knob.stderr


def xvfb_processes(state: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "Xvfb" and any(str(state) in a for a in cmdline):
            found.append(proc)
    return found


def test_headed_profile_runs_on_the_workers_own_xvfb(make_daemon: Any, harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With browser.headless = false and no DISPLAY, the worker runs headed Chromium on its own Xvfb, which ends with it."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed; the README's test command installs it (apt-get install xvfb)")
    monkeypatch.delenv("DISPLAY", raising=False)
    daemon = make_daemon(workers=1, config=LOCAL_SITES)
    write_profile(daemon.work / "headed.toml", harness.site.url(tag="headed"), "[browser]\nheadless = false\n")
    prompts = write_prompts(daemon.work / "p.txt", ["drawn on a virtual screen", "and another one"])
    result = daemon.ctl("submit", "p.txt", "--site", "headed.toml", "--json", "--wait", check=True)
    check_images(daemon.work / "tabfleet-out" / json.loads(result.stdout.splitlines()[0])["job"], prompts)
    agents = {r["agent"] for r in harness.site.requests("/chat?tag=headed")}
    assert agents and not any("Headless" in a for a in agents), agents
    assert len(xvfb_processes(daemon.state)) == 1
    daemon.stop()
    daemon.wait_for(lambda: not xvfb_processes(daemon.state), 10, "Xvfb ending with its worker")


def close_the_login_window(daemon: Any, harness: Any, timeout: float = 30) -> None:
    """Once the headed login browser has signed in, end it as closing its last window does (SIGTERM: a clean exit)."""
    profile = f"--user-data-dir={daemon.state / 'profiles' / 'worker-1'}"

    def signed_in_by_a_person() -> bool:
        return any(r["cookies"].get("auth") == "ok" and "Headless" not in r["agent"]
                   for r in harness.site.requests("/app?tag=login"))

    daemon.wait_for(signed_in_by_a_person, timeout, "the person signing in at the login window")
    window = [p for p in psutil.process_iter(["cmdline"]) if profile in (p.info["cmdline"] or [])
              and any(a.startswith("--display=") for a in p.info["cmdline"])
              and not any(a.startswith("--type=") for a in p.info["cmdline"])]
    assert len(window) == 1, window
    window[0].terminate()


def test_login_signs_a_blocked_worker_in_and_it_takes_tasks_again(make_daemon: Any, harness: Any, short_tmp: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed-out worker is blocked; `login` shows its profile on the display; the sign-in persists and the job finishes."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed; the README's test command installs it (apt-get install xvfb)")
    screen = VirtualDisplay(short_tmp / "screen", short_tmp / "screen.log")  # stands in for a person's desktop
    try:
        monkeypatch.setenv("DISPLAY", asyncio.run(screen.start()))
        daemon = make_daemon(workers=1, config=LOCAL_SITES)
        write_profile(daemon.work / "site.toml", harness.site.url("/app", tag="login"), '[login]\nurls = ["/login"]\n')
        prompts = write_prompts(daemon.work / "p.txt", ["made after signing in"])
        job_id = json.loads(daemon.ctl("submit", "p.txt", "--site", "site.toml", "--json", check=True).stdout)["job"]
        blocked = daemon.wait_for(lambda: [w for w in daemon.call("workers")["workers"] if w["state"] == "blocked"], 30,
                                  "the signed-out worker being blocked")
        assert "login page" in blocked[0]["health"] and "tabfleetctl login --account worker-1" in blocked[0]["health"]
        harness.site.person_signs_in = True
        login = daemon.ctl("login", "--worker", "1", "--site", "site.toml", check=True)
        assert f"open on display {screen.name}" in login.stdout and "/app?tag=login" in login.stdout
        close_the_login_window(daemon, harness)
        job = daemon.wait_job(job_id, 60)
        assert (job["state"], job["done"]) == ("done", 1), daemon.log_text()
        check_images(daemon.work / "tabfleet-out" / job_id, prompts)
        signed = [r for r in harness.site.requests("/app?tag=login") if r["cookies"].get("auth") == "ok"]
        assert len({r["agent"] for r in signed}) == 2, "the login window and then the worker's own browser"
    finally:
        harness.site.person_signs_in = False
        screen.stop()


def test_one_prompt_repeated_in_a_job_on_one_worker_is_done_first_time(make_daemon: Any, harness: Any) -> None:
    """The same prompt several times in a row on one worker, on a form with one slot and one URL per prompt: every
    task is done on its first attempt, each with its own exact image."""
    daemon = make_daemon(workers=1, config=LOCAL_SITES)
    write_profile(daemon.work / "form.toml", harness.site.url("/form", tag="daemon-repeat"), source=FORM)
    prompts = write_prompts(daemon.work / "p.txt", ["a quiet pond"] * 4 + ["a busy street"] * 2 + ["a quiet pond"])
    job_id = json.loads(daemon.ctl("submit", "p.txt", "--site", "form.toml", "--json", "--wait",
                                   check=True).stdout.splitlines()[0])["job"]
    tasks = daemon.call("tasks", {"job": job_id})["tasks"]
    assert [(t["state"], t["attempts"]) for t in tasks] == [("done", 1)] * len(prompts), tasks
    check_images(daemon.work / "tabfleet-out" / job_id, prompts)


def test_a_profile_without_clear_fails_every_task_and_writes_no_image(make_daemon: Any, harness: Any) -> None:
    """input.clear = false on a box holding text: every task fails at once with an error naming the key; no image."""
    daemon = make_daemon(workers=2, config=LOCAL_SITES)
    url = harness.site.url("/form", draft="a photo of an astronaut", tag="no-clear")
    write_profile(daemon.work / "form.toml", url, source=FORM)
    (daemon.work / "form.toml").write_text((daemon.work / "form.toml").read_text().replace("clear = true", "clear = false"))
    write_prompts(daemon.work / "p.txt", [f"a glued prompt {i}" for i in range(6)])
    before = len(harness.site.generated)
    result = daemon.ctl("submit", "p.txt", "--site", "form.toml", "--json", "--wait")
    assert result.returncode == 1, result.stderr
    job_id = json.loads(result.stdout.splitlines()[0])["job"]
    tasks = daemon.call("tasks", {"job": job_id})["tasks"]
    assert [(t["state"], t["attempts"], t["error_kind"]) for t in tasks] == [("failed", 1, "permanent")] * 6, tasks
    assert all("input.clear is false" in t["error"] and "set input.clear = true" in t["error"] for t in tasks)
    out = daemon.work / "tabfleet-out" / job_id
    assert not list(out.glob("*.png")) and harness.site.generated[before:] == []
