"""Exactness on any prompt→image UI: each behaviour of a form-style or chat-style page, on real Chromium,
gives the right image or the right error class on the first attempt, and a wrong send never gives an image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tabfleetd.sites import profiles
from tabfleetd.demo.demoimage import render_png
from tabfleetd.errors import SiteError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def kinds(results: list[Any]) -> list[str]:
    """Each result as 'image' or its error class."""
    return ["image" if isinstance(r, bytes) else r.kind for r in results]


def test_a_repeated_prompt_in_one_slot_updated_in_place_is_answered(harness: Any) -> None:
    """One <img> slot, the same URL for the same prompt and no touch when it is unchanged: the busy cycle marks the answer."""
    url = harness.site.url("/form", tag="repeat")
    prompts = ["a red fox", "a red fox", "a blue whale", "a red fox"]
    before = len(harness.site.generated)
    results, _ = harness.drive(harness.form(), url, prompts)
    assert results == [render_png(p) for p in prompts]
    assert harness.site.generated[before:] == prompts, "each prompt sent once"
    # The page really leaves the slot alone: by novelty and touches alone, the repeat has no answer.
    strict, _ = harness.drive(harness.form(result={"repeat": "touched"}), harness.site.url("/form", tag="strict"),
                              ["a grey heron", "a grey heron"])
    assert strict[0] == render_png("a grey heron")
    assert isinstance(strict[1], SiteError) and "holds no image" in str(strict[1])


@pytest.mark.parametrize("mode", ["set", "replace"])
def test_a_slot_set_again_or_a_new_img_is_the_answer_by_default(harness: Any, mode: str) -> None:
    """With the default result.repeat = "touched", an <img> whose src is set again, or a new <img>, answers a repeat."""
    prompts = ["a paper crane", "a paper crane", "a tin robot"]
    results, _ = harness.drive(harness.form(result={"repeat": "touched"}), harness.site.url("/form", mode=mode), prompts)
    assert results == [render_png(p) for p in prompts]


def test_the_previous_image_kept_after_an_error_is_never_taken(harness: Any, tmp_path: Path) -> None:
    """After an error the slot keeps the last image: the toast's class is the answer, then the next prompt's own image."""
    url = harness.site.url("/form", tag="kept")
    prompts = ["a stone bridge", "[[error:Something went wrong. Try again.]] a stone bridge", "a stone bridge",
               "[[badge]] a stone bridge", "a glass tower"]
    results, shown = harness.drive(harness.form(), url, prompts, snapshots=tmp_path,
                                   after="() => document.querySelector('#result img').src")
    assert kinds(results) == ["image", "transient", "image", "transient", "image"]
    assert results[0] == results[2] == render_png("a stone bridge") and results[4] == render_png("a glass tower")
    assert "Something went wrong" in str(results[1])
    assert "Error" in str(results[3]), "the badge alone, named by its selector"
    assert shown.endswith(".png")


def test_error_toasts_that_merge_and_disappear_are_each_read(harness: Any) -> None:
    """A second error merges into the toast on screen ("Error (2)"); after a toast went away a new one counts from 1 again."""
    url = harness.site.url("/form", latency=150, toast_ms=1500)
    prompts = ["[[error:Something went wrong]] one", "[[error:This may violate our content policy]] two",
               "a copper kettle", "a silver spoon [[wait:1600]]",
               "[[error:Something went wrong]] three", "[[error:This may violate our content policy]] four"]
    results, log = harness.drive(harness.form(), url, prompts, after="() => window.toastLog")
    assert kinds(results) == ["transient", "permanent", "image", "image", "transient", "permanent"]
    assert results[2:4] == [render_png("a copper kettle"), render_png("a silver spoon [[wait:1600]]")]
    assert log == ["new", "merged", "new", "merged"], "the page merged toasts, and the first one went away in between"


def test_a_prompt_box_that_keeps_its_text_is_cleared_or_fails_loudly(harness: Any, tmp_path: Path) -> None:
    """The box keeps its text after Generate: input.clear empties it; without clear the next prompt fails, unsent."""
    url = harness.site.url("/form", tag="keep")
    results, _ = harness.drive(harness.form(), url, ["a wooden horse", "a marble owl"])
    assert results == [render_png("a wooden horse"), render_png("a marble owl")]
    before = len(harness.site.generated)
    glued, _ = harness.drive(harness.form(input={"clear": False}), url, ["a clay pot", "a brass bell"], snapshots=tmp_path)
    assert glued[0] == render_png("a clay pot")
    error = glued[1]
    assert isinstance(error, SiteError) and error.kind == "permanent", error
    assert "already holds text" in str(error) and "input.clear = true" in str(error) and ".png" in str(error)
    assert harness.site.generated[before:] == ["a clay pot"], "nothing glued ever reached the site"


def test_a_box_that_does_not_hold_exactly_the_prompt_is_never_sent(harness: Any, tmp_path: Path) -> None:
    """The box is read back before sending: a box that cut the prompt short fails the task, with a snapshot, unsent."""
    before = len(harness.site.generated)
    results, _ = harness.drive(harness.form(), harness.site.url("/form", maxlength=12),
                               ["a prompt far longer than twelve characters"], snapshots=tmp_path)
    (error,) = results
    assert isinstance(error, SiteError) and "the input box holds \"a prompt far\", not the prompt" in str(error)
    assert list(tmp_path.glob("*.png")) and harness.site.generated[before:] == []


def test_a_page_built_by_scripts_after_load(harness: Any) -> None:
    """The form appears inert, then its script swaps in a new, empty box and enables Generate: the prompt still goes."""
    url = harness.site.url("/form", build=300, hydrate=400)
    before = len(harness.site.generated)
    prompts = ["a lantern in fog", "a kite over dunes"]
    results, _ = harness.drive(harness.form(), url, prompts)
    assert results == [render_png(p) for p in prompts]
    assert harness.site.generated[before:] == prompts


def test_a_status_line_updated_in_place_marks_the_answer(harness: Any) -> None:
    """Without busy selectors, result.answer_in_place: the status line changing marks a repeated prompt's unchanged slot."""
    profile = harness.form(busy={"selectors": []}, result={"answer": "#info", "answer_in_place": True})
    prompts = ["a violet moth", "a violet moth", "an amber comb"]
    results, info = harness.drive(profile, harness.site.url("/form", info=1), prompts,
                                  after="() => document.querySelector('#info').textContent")
    assert results == [render_png(p) for p in prompts] and info == "Made 3 images"


OTHER = "Network error in “Holiday cards”: image ready"


def test_sidebar_titles_and_another_conversations_toast_are_not_this_prompts(harness: Any) -> None:
    """A sidebar title made from the prompt's words and a toast (with a thumbnail) about another chat are neither its
    error nor its image; whole-page matching, an explicit choice, would read them."""
    prompt = "a network error screen for a retro game"
    url = harness.site.url(sidebar=1, other=OTHER, latency=400)
    messages = [{"pattern": "network error", "class": "transient"}]
    results, titles = harness.drive(harness.profile(messages=messages), url, [prompt],
                                    after="() => [document.querySelector('#titles').innerText, "
                                          "document.querySelectorAll('#toasts img.result').length]")
    assert results == [render_png(prompt)]
    assert titles == ["a network error screen", 1], "the sidebar title and the other chat's thumbnail were on the page"
    whole, _ = harness.drive(harness.profile(messages=[m | {"where": "page"} for m in messages]), url, [prompt])
    assert isinstance(whole[0], SiteError) and whole[0].kind == "transient"


def test_a_user_turn_must_hold_exactly_the_prompt(harness: Any, tmp_path: Path) -> None:
    """A site that glued the previous prompt to this one shows it in the user turn: an error with a snapshot, no image."""
    results, _ = harness.drive(harness.profile(), harness.site.url(glue=1), ["a green door", "a red door"], snapshots=tmp_path)
    assert results[0] == render_png("a green door")
    error = results[1]
    assert isinstance(error, SiteError) and error.kind == "transient"
    assert 'the site received "a green door a red door", not the prompt "a red door"' in str(error)
    assert list(tmp_path.glob("*.png"))


def test_a_repeated_prompt_in_a_chat_with_one_url_per_prompt(harness: Any) -> None:
    """A chat that gives the same prompt the same image URL: each repeat's new <img> is its answer."""
    prompts = ["a snow globe", "a snow globe", "a snow globe"]
    results, _ = harness.drive(harness.profile(), harness.site.url(stable=1), prompts)
    assert results == [render_png(p) for p in prompts]


def test_the_chatgpt_profile_on_an_imitation_of_its_2026_markup(harness: Any) -> None:
    """The built-in chatgpt profile on pages/chatgpt.html: a role-changing submit button never clicked as voice mode,
    the assistant section's messages (refusal, a cooldown in words), never the blurred preview, one image of three <img>,
    and neither the sidebar title nor another conversation's toast read as an error."""
    builtin = profiles.builtin("chatgpt")
    url = harness.site.url("/chatgpt", latency=300)
    profile = profiles.normalize(builtin | {
        "start_url": url, "pacing": {"pause_s": 0, "jitter_s": 0},
        "login": {"urls": [], "selectors": [], "probe_url": "", "probe_pattern": ""},  # no session API here
        "busy": builtin["busy"] | {"settle_s": 0.3}, "result": builtin["result"] | {"grace_s": 1}}, "chatgpt")
    prompts = ["a network error screen for a retro game", "a network error screen for a retro game",
               "[[refuse]] a lighthouse", "[[cooldown]] a lighthouse", "[[other]] a quiet harbour"]
    results, voice = harness.drive(profile, url, prompts, after="() => window.voiceStarted")
    assert kinds(results) == ["image", "image", "permanent", "rate_limit", "image"], results
    assert results[0] == results[1] == render_png(prompts[0]) and results[4] == render_png(prompts[4])
    assert "did not follow our content policy" in str(results[2])
    assert isinstance(results[3], SiteError) and results[3].wait_s == 3600
    assert voice == 0, "the composer button was never clicked in its voice-mode role"
