"""The console's hands-free mode (issue 27, item 10) in a real headless Chromium against the real
server: the page opens /v1/realtime from the browser (the key as the `openai-insecure-api-key.`
subprotocol, since a page's WebSocket cannot send headers), streams a fake microphone reading a
human French clip as PCM16 from an AudioWorklet, the server's VAD finds the turn, the page shows
the transcription and the answer and plays the answer's audio as it arrives; hanging up ends the
call; a wrong key is a clear message; no request leaves 127.0.0.1."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import jiwer
import pytest

from tests.audio import manifest, normalise_words
from tests.browser import Browser, browser
from tests.server import LeaServer
from tests.test_console import CLIP, SETTINGS, by_testid, connected, open_console, state
from tests.waiting import wait_for

pytestmark = pytest.mark.browser
CLIP_REFERENCE = normalise_words(next(c.reference for c in manifest(CLIP.parent) if c.path.name == CLIP.name))
HANDS_FREE_WER_BOUND = 0.85  # the highest measured (0.72) plus 2 of the clip's 17 words

CALL_STATE = """
const s = document.querySelector('[data-testid="hands-free-state"]');
return {state: s.dataset.state, played: Number(s.dataset.played), text: s.textContent,
        pressed: document.querySelector('[data-testid="hands-free"]').getAttribute("aria-pressed")};
"""


@pytest.fixture(scope="module")
def lea(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    server = LeaServer(tmp_path_factory.mktemp("console-hands-free"), models_dir, SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def one_turn_microphone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second of silence, the clip, then silence: Chromium's fake microphone reads it once
    (`%noloop`), so the broker says one thing and waits for the answer."""
    wav = tmp_path_factory.mktemp("hands-free-microphone") / "one-turn.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-t",
            "1",
            "-i",
            "anullsrc=r=48000:cl=mono",
            "-i",
            str(CLIP),
            "-f",
            "lavfi",
            "-t",
            "20",
            "-i",
            "anullsrc=r=48000:cl=mono",
            "-filter_complex",
            "[1:a]aresample=48000,aformat=channel_layouts=mono[c];[0:a][c][2:a]concat=n=3:v=0:a=1",
            "-ar",
            "48000",
            "-ac",
            "1",
            str(wav),
        ],
        check=True,
    )
    return f"{wav}%noloop"


def call_state(b: Browser) -> dict:
    return b.js(CALL_STATE)  # type: ignore[return-value]


def test_a_hands_free_turn_is_heard_answered_and_spoken(lea: LeaServer, one_turn_microphone: str) -> None:
    with browser(width=1280, microphone=Path(one_turn_microphone)) as b:
        open_console(b, lea)
        connected(b)
        by_testid(b, "hands-free").click()
        wait_for(
            lambda: call_state(b)["played"] > 0 and state(b)["answerState"] == "done",
            "the answer spoken and finished",
            while_possible=lambda: call_state(b)["state"] != "off" and not state(b)["problem"],
        )
        page = state(b)
        # The transcript is this clip's: its word error rate against the reference was 0.61 to
        # 0.72 over 13 calls (0.28 when the same clip reaches the server as PCM without the
        # browser: Chromium's capture path costs words, see docs/realtime.md); other sentences
        # score 0.89 to 1. Two of its words were heard in every call.
        heard = normalise_words(page["transcript"])
        wer = jiwer.wer(CLIP_REFERENCE, heard)
        print(f"\nhands-free transcript: {page['transcript']!r}, WER {wer:.2f} (bound {HANDS_FREE_WER_BOUND})")
        assert wer <= HANDS_FREE_WER_BOUND and {"voiture", "terminé"} <= set(heard.split()), page["transcript"]
        assert page["answer"].strip() not in ("", "—")
        assert call_state(b)["pressed"] == "true"
        by_testid(b, "hands-free").click()  # hang up
        wait_for(lambda: call_state(b)["state"] == "off", "the call ended", while_possible=lambda: True)
        assert call_state(b)["pressed"] == "false" and not state(b)["problem"]
        assert b.outside_requests(lea.url) == []
        events = [e for e in lea.log_events() if e.get("event") in ("realtime.open", "realtime.close")]
        assert [e["event"] for e in events][-2:] == ["realtime.open", "realtime.close"]


def test_a_wrong_key_ends_the_call_with_a_clear_message(lea: LeaServer, one_turn_microphone: str) -> None:
    with browser(width=1280, microphone=Path(one_turn_microphone)) as b:
        open_console(b, lea, key="not-the-key-0000")
        by_testid(b, "hands-free").click()
        wait_for(
            lambda: state(b)["problem"] != "",
            "a message about the refused call",
            while_possible=lambda: call_state(b)["state"] != "off" or state(b)["problem"] == "",
        )
        assert "mains libres" in state(b)["problem"].lower() and call_state(b)["state"] == "off"
