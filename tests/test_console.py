"""The browser console (/console) in a real headless Chromium against the real server: a text turn
streams in and fills the timings; push-to-talk (held button, held Space) records a French clip
from a fake microphone, shows its transcription and the answer, and plays the answer's audio to
its end; conversations, "nouvelle conversation" and "effacer cette session"; Léa's documents;
a wrong key and a stopped server give clear messages; nothing lands in localStorage or cookies;
no request leaves 127.0.0.1. Screenshots at 1280 and 375 px go to the artifacts folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from tests.browser import Browser, browser, wav_of
from tests.conftest import db_rows
from tests.server import API_KEY, LeaServer
from tests.waiting import wait_for

pytestmark = pytest.mark.browser

# A human French clip (FLEURS) and words of its reference transcript the tiny preset's Whisper hears.
CLIP = Path("/work/shared/audio/fr/fleurs_fr_005.ogg")
CLIP_SECONDS = 7.2
CLIP_WORDS = {"voiture", "course", "contrôle", "perdu", "démarrage"}
SETTINGS = {
    "LEA_LLM_MAX_REPLY_TOKENS": "16",
    "LEA_LLM_TEMPERATURE": "0",
    "LEA_TTS_OVERLAP": "after_reply",
}

# Everything a test reads from the page, in one round trip.
PAGE_STATE = """
const by = (id) => document.querySelector(`[data-testid="${id}"]`);
const audio = by("answer-audio");
const problem = by("error");
return {
  ready: document.documentElement.dataset.consoleReady === "true",
  problem: problem.hidden ? "" : problem.textContent,
  problemIsNotice: problem.classList.contains("notice"),
  answer: by("answer").textContent,
  answerState: by("answer").dataset.state,
  turn: Number(by("answer").dataset.turn || 0),
  transcript: by("transcript").textContent,
  talkPressed: by("talk").getAttribute("aria-pressed"),
  recordedMs: Number(by("talk").dataset.recordedMs || 0),
  statusReady: by("status").dataset.ready,
  statusText: by("status").textContent,
  timings: Object.fromEntries([...by("timings").querySelectorAll("td[data-stage]")].map((td) => [td.dataset.stage, td.textContent])),
  playback: audio.dataset.playback,
  piecesPlayed: Number(audio.dataset.played || 0),
  pieces: Number(audio.dataset.pieces || 0),
  audioEnded: audio.ended,
  audioAtEnd: audio.duration > 0 && Math.abs(audio.currentTime - audio.duration) < 0.05,
  history: [...by("history").children].map((li) => li.querySelectorAll("ul > li").length),
  localStorage: localStorage.length,
  cookie: document.cookie,
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  documents: [...by("documents").querySelectorAll("tr")].map((tr) => tr.textContent),
  documentsState: by("documents-state").textContent,
  results: [...by("document-results").children].map((li) => li.textContent),
  thesaurus: by("thesaurus-text").value,
  thesaurusState: by("thesaurus-state").textContent,
};
"""

# Records the answer's length at each change while it streams (checked after the turn).
WATCH_ANSWER = """
const answer = document.querySelector('[data-testid="answer"]');
window.answerLengths = [];
new MutationObserver(() => {
  if (answer.dataset.state === "streaming") window.answerLengths.push(answer.textContent.length);
}).observe(answer, { childList: true, characterData: true, subtree: true });
"""


@pytest.fixture(scope="module")
def lea(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    server = LeaServer(tmp_path_factory.mktemp("console"), models_dir, SETTINGS)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wav_of(CLIP, tmp_path_factory.mktemp("microphone"))


def state(b: Browser) -> dict:
    return b.js(PAGE_STATE)  # type: ignore[return-value]


def by_testid(b: Browser, testid: str) -> WebElement:
    return b.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def open_console(b: Browser, lea: LeaServer, key: str = API_KEY) -> None:
    b.open(f"{lea.url}/console")
    assert state(b)["ready"], "the console's script ran (the load event waits for module scripts)"
    by_testid(b, "api-key").send_keys(key)
    by_testid(b, "connect").click()


def connected(b: Browser) -> None:
    """Waits for the status panel's answer to the key."""
    wait_for(
        lambda: state(b)["statusReady"] in ("yes", "error"),
        "the status panel answered",
        while_possible=lambda: state(b)["statusReady"] == "unknown",
    )
    assert state(b)["statusReady"] == "yes", state(b)


def turn_finished(b: Browser, turn: int = 1) -> dict:
    """Waits for the page's `turn`-th turn to end; returns the page's state then."""

    def ended() -> bool:
        page = state(b)
        return page["turn"] == turn and page["answerState"] in ("done", "failed")

    wait_for(ended, f"turn {turn} ended", while_possible=lambda: state(b)["turn"] <= turn and not state(b)["problem"])
    page = state(b)
    assert page["answerState"] == "done", page
    return page


def audio_played(b: Browser) -> dict:
    wait_for(
        lambda: state(b)["playback"] == "ended",
        "the answer's audio played to its end",
        while_possible=lambda: state(b)["playback"] in ("idle", "waiting", "playing"),
    )
    return state(b)


def nothing_stored_in_the_browser(b: Browser) -> None:
    page = state(b)
    assert page["localStorage"] == 0
    assert page["cookie"] == ""
    assert b.driver.get_cookies() == []


def send_text(b: Browser, message: str) -> None:
    field = by_testid(b, "message-input")
    field.send_keys(message)
    field.send_keys(Keys.ENTER)


def test_text_chat_streams_fills_the_timings_and_manages_the_session(lea: LeaServer) -> None:
    with browser(width=1280) as b:
        open_console(b, lea)
        connected(b)
        page = state(b)
        assert "Prête" in page["statusText"] and "language model" in page["statusText"], page
        assert "CPU" in page["statusText"] and lea.extra_env.get("LEA_LOCALE", "fr-CA") in page["statusText"]

        b.js(WATCH_ANSWER)
        send_text(b, "Bonjour, je cherche une maison à Québec.")
        page = turn_finished(b)
        final = len(page["answer"])
        lengths = b.js("return window.answerLengths")
        assert final > 0 and any(0 < n < final for n in lengths), (lengths, final)  # it grew before the end
        assert page["timings"]["llm"] != "—" and page["timings"]["total"] != "—", page["timings"]
        assert page["timings"]["first"] != "—", page["timings"]
        assert page["timings"]["asr"] == "—", "a text turn has no recognition"
        assert page["history"] == [1]

        send_text(b, "Et avec un garage ?")
        assert turn_finished(b, 2)["history"] == [2], "the second turn continues the conversation"
        by_testid(b, "new-conversation").click()
        assert state(b)["problemIsNotice"] and "Nouvelle conversation" in state(b)["problem"]
        send_text(b, "Bonjour, une autre question.")
        page = turn_finished(b, 3)
        assert page["history"] == [2, 1], "a new conversation after the button"
        rows = db_rows(lea.data_dir)
        assert len({c[1] for c in rows["conversations"]}) == 2 and len(rows["messages"]) == 6
        b.screenshot("console-1280-text")

        by_testid(b, "erase-session").click()
        b.driver.switch_to.alert.accept()
        wait_for(
            lambda: "Session effacée" in state(b)["problem"],
            "the erasure answered",
            while_possible=lambda: "Session effacée" not in state(b)["problem"] and not state(b)["problem"],
        )
        assert "2 conversation(s), 6 message(s)" in state(b)["problem"], state(b)["problem"]
        assert state(b)["history"] == []
        assert db_rows(lea.data_dir) == {"conversations": [], "messages": []}

        nothing_stored_in_the_browser(b)
        assert b.outside_requests(lea.url) == []
        errors = [m for m in b.console_messages if m["level"] == "SEVERE"]
        assert errors == [], errors  # no script error, no Content-Security-Policy refusal


@pytest.mark.parametrize("hold", ["button", "space"])
def test_push_to_talk_transcribes_answers_and_plays_the_answer(lea: LeaServer, microphone: Path, hold: str) -> None:
    with browser(width=375, microphone=microphone) as b:
        open_console(b, lea)
        connected(b)
        assert state(b)["innerWidth"] == 375
        talk = by_testid(b, "talk")
        if hold == "button":
            ActionChains(b.driver).click_and_hold(talk).perform()
        else:
            b.driver.find_element(By.TAG_NAME, "h1").click()  # focus on the page, not in a field
            ActionChains(b.driver).key_down(Keys.SPACE).perform()
        # Held while the whole clip plays into the fake microphone.
        wait_for(
            lambda: state(b)["recordedMs"] >= CLIP_SECONDS * 1000 + 500,
            "the clip recorded",
            while_possible=lambda: state(b)["talkPressed"] == "true" and not state(b)["problem"],
        )
        if hold == "button":
            ActionChains(b.driver).release(talk).perform()
        else:
            ActionChains(b.driver).key_up(Keys.SPACE).perform()
        assert state(b)["talkPressed"] == "false"

        page = turn_finished(b)
        heard = set(page["transcript"].lower().replace(",", " ").replace(".", " ").split())
        assert len(heard & CLIP_WORDS) >= 2, page["transcript"]
        assert page["answer"].strip(), page
        for stage in ("decode", "asr", "llm", "total"):
            assert page["timings"][stage] != "—", page["timings"]

        page = audio_played(b)
        assert page["pieces"] >= 1 and page["piecesPlayed"] == page["pieces"], page
        assert page["audioEnded"] and page["audioAtEnd"], page
        assert page["timings"]["tts"] != "—", page["timings"]
        assert page["scrollWidth"] <= 375, "nothing wider than a phone's screen"
        b.screenshot(f"console-375-voice-{hold}")
        nothing_stored_in_the_browser(b)
        assert b.outside_requests(lea.url) == []


def test_documents_upload_list_search_delete(lea: LeaServer, tmp_path: Path) -> None:
    document = tmp_path / "chauffage.md"
    document.write_text(
        "# Guide du chauffage\n\n## Thermopompe\n\nUne thermopompe murale chauffe l'hiver et climatise l'été; "
        "son entretien annuel coûte environ deux cents dollars.\n",
        encoding="utf-8",
    )
    with browser(width=1280) as b:
        open_console(b, lea)
        connected(b)
        by_testid(b, "document-file").send_keys(str(document))
        by_testid(b, "document-upload").click()
        wait_for(
            lambda: any("chauffage.md" in row for row in state(b)["documents"]),
            "the document listed",
            while_possible=lambda: not state(b)["problem"] and "ajouté" not in state(b)["documentsState"],
        )
        assert "Guide du chauffage" in state(b)["documentsState"]

        by_testid(b, "document-query").send_keys("entretien thermopompe")
        by_testid(b, "document-search").click()
        wait_for(
            lambda: state(b)["results"] != [],
            "search results",
            while_possible=lambda: not state(b)["problem"] and "Aucun passage" not in state(b)["documentsState"],
        )
        assert "Thermopompe" in state(b)["results"][0] and "entretien annuel" in state(b)["results"][0]

        # The agency's own vocabulary: a rule typed and saved here counts from the next search.
        assert state(b)["thesaurus"] == "" and "Aucune règle" in state(b)["thesaurusState"]
        by_testid(b, "thesaurus-text").send_keys("heat pump => thermopompe\nle, la\n")
        by_testid(b, "thesaurus-save").click()
        wait_for(
            lambda: "1 règle(s)" in state(b)["thesaurusState"],
            "the rules saved",
            while_possible=lambda: not state(b)["problem"],
        )
        assert "Lignes sans règle : 2." in state(b)["thesaurusState"]
        with lea.client(headers={"X-API-Key": API_KEY}) as client:
            r = client.get("/api/knowledge/search", params={"q": "heat pump"})
            assert "thermopompe" in r.json()["expansions"] and "Thermopompe" in r.json()["passages"][0]["section"]
        b.screenshot("console-1280-documents")

        by_testid(b, "document-delete").click()
        wait_for(
            lambda: state(b)["documents"] == [],
            "the document removed",
            while_possible=lambda: not state(b)["problem"] and "supprimé" not in state(b)["documentsState"],
        )
        nothing_stored_in_the_browser(b)
        assert b.outside_requests(lea.url) == []
        by_testid(b, "thesaurus-text").clear()
        by_testid(b, "thesaurus-save").click()
        wait_for(
            lambda: "Aucune règle" in state(b)["thesaurusState"],
            "the rules emptied",
            while_possible=lambda: not state(b)["problem"],
        )


def test_wrong_key_is_a_clear_message(lea: LeaServer) -> None:
    with browser(width=1280) as b:
        open_console(b, lea, key="not-the-key")
        wait_for(
            lambda: state(b)["problem"] != "",
            "a message about the key",
            while_possible=lambda: state(b)["statusReady"] == "unknown",
        )
        assert "Clé d'API refusée" in state(b)["problem"], state(b)
        assert state(b)["statusReady"] == "error"
        send_text(b, "Bonjour")
        assert turn_finished_with_problem(b).startswith("Clé d'API refusée")
        nothing_stored_in_the_browser(b)


def turn_finished_with_problem(b: Browser) -> str:
    wait_for(
        lambda: state(b)["answerState"] == "failed",
        "the turn failed",
        while_possible=lambda: state(b)["answerState"] in ("idle", "streaming"),
    )
    return state(b)["problem"]


def test_server_down_is_a_clear_message(make_server) -> None:
    lea = make_server(SETTINGS)
    with browser(width=1280) as b:
        open_console(b, lea)
        connected(b)
        lea.stop()
        send_text(b, "Bonjour")
        assert "Le serveur ne répond pas" in turn_finished_with_problem(b)
        by_testid(b, "refresh-status").click()
        wait_for(
            lambda: state(b)["statusReady"] == "error",
            "the status panel says so",
            while_possible=lambda: state(b)["statusReady"] == "yes",
        )
        assert "injoignable" in state(b)["statusText"]
        nothing_stored_in_the_browser(b)
