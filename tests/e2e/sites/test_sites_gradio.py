"""A real, minimal Gradio image app (gradio_app.py) driven by its profile (gradio.toml): the same prompt several times,
errors shown as toasts and a badge with the previous image kept, start-URL variables, and a daemon job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.sites import profiles
from tabfleetd.demo.demoimage import render_png
from tabfleetd.errors import SiteError
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gradio_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The Gradio app on a loopback port, for the whole module."""
    pytest.importorskip("gradio", reason="gradio is not installed; `pip install -e '.[test]'` installs it")
    port = free_port()
    log = tmp_path_factory.mktemp("gradio") / "app.log"
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(HERE.parents[2] / "daemon")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(HERE / "gradio_app.py"), str(port), "0.3"], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the Gradio app exited:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"the Gradio app did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.3)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def gradio_profile() -> dict[str, Any]:
    return profiles.normalize(tomllib.loads((HERE / "gradio.toml").read_text()), "gradio.toml")


def test_gradio_repeats_errors_and_the_kept_image(harness: Any, gradio_port: int, tmp_path: Path) -> None:
    """Each prompt on a real Gradio app: repeats answered, an error's toast and badge give its class, never the kept image."""
    profile = profiles.bind_vars(gradio_profile(), {"port": str(gradio_port)}, {})
    url = profiles.start_url(profile, "job", {}, None)
    assert url == f"http://127.0.0.1:{gradio_port}/"
    prompts = ["a red fox", "a red fox", "[[error]] a red fox", "a red fox", "[[policy]] a red fox", "a red fox",
               "a blue whale", "a blue whale"]
    results, _ = harness.drive(profile, url, prompts, snapshots=tmp_path)
    kinds = ["image" if isinstance(r, bytes) else r.kind for r in results]
    assert kinds == ["image", "image", "transient", "image", "permanent", "image", "image", "image"], results
    assert [r for r in results if isinstance(r, bytes)] == [render_png(p) for p in prompts if "[[" not in p]
    assert "Something went wrong" in str(results[2]) and "content policy" in str(results[4])
    # The profile is what the engine needs: by novelty alone, Gradio's untouched <img> answers no repeat.
    strict = profile | {"result": profile["result"] | {"repeat": "touched"}}
    plain, _ = harness.drive(strict, url, ["a grey heron", "a grey heron"])
    assert plain[0] == render_png("a grey heron") and isinstance(plain[1], SiteError)


def test_gradio_job_with_one_prompt_repeated_on_one_worker(make_daemon: Any, gradio_port: int) -> None:
    """A job holding one prompt several times in a row, on one worker: every task done on its first attempt."""
    daemon = make_daemon(workers=1, config={"site_vars": {"host": "127.0.0.1"}, "site_networks": ["127.0.0.1/32"]})
    (daemon.work / "gradio.toml").write_text((HERE / "gradio.toml").read_text())
    prompts = ["a lighthouse", "a lighthouse", "a lighthouse", "a harbour", "a harbour"]
    (daemon.work / "p.txt").write_text("\n".join(prompts) + "\n")
    result = daemon.ctl("submit", "p.txt", "--site", "gradio.toml", "--var", f"port={gradio_port}", "--json", "--wait",
                        check=True)
    job_id = json.loads(result.stdout.splitlines()[0])["job"]
    tasks = daemon.call("tasks", {"job": job_id})["tasks"]
    assert [(t["state"], t["attempts"]) for t in tasks] == [("done", 1)] * len(prompts), tasks
    out = daemon.work / "tabfleet-out" / job_id
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt)
