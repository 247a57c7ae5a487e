"""Speech off the critical path: the JSON leaves when the reply text is complete, its audio URL
already valid; the audio streams sentence by sentence while it is synthesised."""

from __future__ import annotations

import io
import time

import soundfile as sf

from lea_local.tts.sentences import SentenceSplitter, split_sentences


def test_sentences_split_as_text_streams_in():
    splitter = SentenceSplitter()
    text = "Le bien est situé à Lyon. M. Martin le vend 350 000 €. Il fait 75 m² ! Visite ? Oui, demain"
    out: list[str] = []
    for ch in text:
        out += splitter.feed(ch)
    out += splitter.flush()
    assert out == [
        "Le bien est situé à Lyon.",
        "M. Martin le vend 350 000 €.",
        "Il fait 75 m² !",
        "Visite ? Oui, demain",
    ]


def test_splitting_keeps_numbers_and_lists_whole():
    assert split_sentences("Le taux est de 3,5 %. Étapes :\n1. Estimation.\n2. Mandat.") == [
        "Le taux est de 3,5 %.",
        "Étapes :",
        "1. Estimation.",
        "2. Mandat.",
    ]


def test_json_returns_before_speech_and_audio_streams_from_the_first_sentence(make_server):
    lea = make_server({"LEA_TTS_FOR_TEXT_CHAT": "true", "LEA_LLM_MAX_REPLY_TOKENS": "160", "LEA_LLM_TEMPERATURE": "0"})
    with lea.client() as client:
        body = lea.chat(client, "Écris une très longue histoire sur une maison à vendre à Lyon.").json()
        json_at = time.monotonic()
        name = body["assistant_audio_url"].rsplit("/", 1)[1]
        assert not (lea.data_dir / "tts" / name).exists(), "speech was finished before the JSON left"
        arrivals: list[tuple[float, int]] = []
        audio = bytearray()
        with client.stream("GET", body["assistant_audio_url"]) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
            for chunk in r.iter_raw():
                arrivals.append((time.monotonic() - json_at, len(chunk)))
                audio += chunk
    first, last = arrivals[0][0], arrivals[-1][0]
    print(f"\nfirst audio byte {first * 1000:.0f} ms after the JSON; last {last * 1000:.0f} ms; {len(arrivals)} chunks")
    assert len(arrivals) > 1 and first < last / 2  # the first sentence played long before the end
    samples, rate = sf.read(io.BytesIO(bytes(audio)))
    assert len(samples) / rate > 3
    # The finished file, then served from the store, is the same audio.
    deadline = time.monotonic() + 10
    while not (lea.data_dir / "tts" / name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with lea.client() as client:
        assert client.get(body["assistant_audio_url"]).content == bytes(audio)


def test_speech_overlaps_generation_when_asked(make_server):
    lea = make_server(
        {
            "LEA_TTS_FOR_TEXT_CHAT": "true",
            "LEA_TTS_OVERLAP": "during_generation",
            "LEA_LLM_MAX_REPLY_TOKENS": "200",
            "LEA_LLM_TEMPERATURE": "0",
        }
    )
    with lea.client() as client:
        body = lea.chat(client, "Écris une très longue histoire sur une maison à vendre à Lyon.").json()
        assert client.get(body["assistant_audio_url"]).status_code == 200
    overlap = [e for e in lea.log_events() if e.get("event") == "tts.overlap"]
    assert overlap and overlap[-1]["audio_bytes_before_reply_end"] > 0


def test_ready_means_models_loaded_and_warmed_up(make_server):
    lea = make_server()
    ready = [e for e in lea.log_events() if e.get("event") == "ready"]
    assert ready and set(ready[0]["models"]) == {"llm", "asr", "tts"}
    assert ready[0]["warm_up_seconds"] > 0
