"""POST /v1/audio/speech through the official `openai` SDK (sync and async) against the real
server: every response format decodes with real ffmpeg to a plausible duration, speed changes the
duration, audio streams before the whole text is synthesised, voices resolve, and bad input gets
OpenAI's error shape with the parameter at fault."""

from __future__ import annotations

import asyncio
import subprocess
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from lea_local.tts.voices import OPENAI_VOICES
from tests.server import API_KEY

TEXT = "Bonjour, je suis Léa. La visite du condo est prévue demain matin à dix heures."
WORDS = len(TEXT.split())  # 15
# Many sentences: seconds of synthesis on this CPU, so that the first bytes clearly come first.
LONG_TEXT = " ".join(f"Voici la phrase numéro {n} de cette longue description du condo." for n in range(1, 21))
INSTALLED_VOICE = "en_US-joe-medium"  # the tiny preset's voice
# Measured with the tiny preset's voice: about 0.45 s of speech per word at speed 1. The bounds
# leave room for Piper's random phoneme durations and the French text read by an English voice.
SECONDS_PER_WORD = (0.2, 1.2)

# response_format → (Content-Type, how the stream starts)
FORMATS: dict[str, tuple[str, tuple[bytes, ...]]] = {
    "mp3": ("audio/mpeg", (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")),
    "opus": ("audio/ogg", (b"OggS",)),
    "aac": ("audio/aac", (b"\xff\xf1", b"\xff\xf9")),
    "flac": ("audio/flac", (b"fLaC",)),
    "wav": ("audio/wav", (b"RIFF",)),
    "pcm": ("audio/pcm", (b"",)),
}


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def decoded_seconds(data: bytes, response_format: str) -> float:
    """Duration of the audio, decoded by ffmpeg (pcm: read as OpenAI documents it)."""
    if response_format == "pcm":
        source = ["-f", "s16le", "-ar", "24000", "-ac", "1"]
    else:
        source = []
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", *source, "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "16000",
         "pipe:1"],
        input=data, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return len(pcm) / 2 / 16_000


def audio_seconds_synthesised(server) -> float:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        text = http.get("/metrics", headers={"X-API-Key": API_KEY}).text
    for family in text_string_to_metric_families(text):
        if family.name == "lea_tts_audio_seconds":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("lea_tts_audio_seconds is missing from /metrics")


def assert_openai_error(exc: openai.APIStatusError, status: int, param: str | None) -> None:
    assert exc.status_code == status
    error = exc.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param


@pytest.mark.parametrize("response_format", list(FORMATS))
def test_every_response_format_decodes_to_a_plausible_duration(client, response_format) -> None:
    response = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=response_format)
    media_type, starts = FORMATS[response_format]
    assert response.response.headers["content-type"] == media_type
    assert response.content.startswith(starts)
    if response_format == "pcm":
        assert len(response.content) % 2 == 0  # whole 16-bit samples
    seconds = decoded_seconds(response.content, response_format)
    assert SECONDS_PER_WORD[0] * WORDS <= seconds <= SECONDS_PER_WORD[1] * WORDS


@pytest.mark.slow
def test_pcm_is_24_khz_whatever_the_voice_rate(client) -> None:
    """The voice speaks at 22 050 Hz and pcm carries no header: it must be resampled to 24 kHz.
    Left at 22 050 Hz and read at 24 kHz, it would last 8% less than the same speech as WAV
    (whose header tells its rate). Piper's durations vary by a few % from call to call: medians
    of five calls each (two medians of three once differed by 4.2%)."""

    def median_seconds(response_format: str) -> float:
        runs = [
            decoded_seconds(
                client.audio.speech.create(
                    model="tts-1", voice="alloy", input=TEXT, response_format=response_format
                ).content,
                response_format,
            )
            for _ in range(5)
        ]
        return sorted(runs)[2]

    assert 0.96 <= median_seconds("pcm") / median_seconds("wav") <= 1.04


def test_immoassist_speech_call_async(server) -> None:
    """ImmoAssist's own call, with the async client it uses."""

    async def speak() -> tuple[bytes, str]:
        async with AsyncOpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0) as client:
            response = await client.audio.speech.create(model="tts-1-hd", voice="shimmer", input=TEXT, speed=1.2)
            return response.content, response.response.headers["content-type"]

    audio, media_type = asyncio.run(speak())
    assert media_type == "audio/mpeg"
    seconds = decoded_seconds(audio, "mp3")
    assert SECONDS_PER_WORD[0] * WORDS / 1.2 <= seconds <= SECONDS_PER_WORD[1] * WORDS / 1.2


def test_speed_changes_the_duration(client) -> None:
    def seconds_at(speed: float) -> float:
        audio = client.audio.speech.create(model="tts-1", voice="nova", input=TEXT, speed=speed, response_format="wav")
        return decoded_seconds(audio.content, "wav")

    normal, fast, slow = seconds_at(1.0), seconds_at(2.0), seconds_at(0.5)
    # Piper's length_scale is 1/speed: about half and twice as long (pauses scale too).
    assert fast < 0.7 * normal
    assert slow > 1.4 * normal


@pytest.mark.slow
def test_audio_streams_before_the_whole_text_is_synthesised(client, server) -> None:
    """The first bytes arrive, and decode as the start of an MP3, while the rest of a 20-sentence
    text is still being synthesised: the audio counter in /metrics, which grows only when a
    synthesis is complete, has not moved yet."""
    before = audio_seconds_synthesised(server)
    with client.with_streaming_response.audio.speech.create(model="tts-1", voice="coral", input=LONG_TEXT) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        chunks = response.iter_bytes()
        head = b""
        while len(head) < 4096:  # a few MP3 frames
            head += next(chunks)
        during = audio_seconds_synthesised(server)
        rest = b"".join(chunks)
    after = audio_seconds_synthesised(server)
    assert during == before  # still synthesising when the first bytes were read
    assert head.startswith(FORMATS["mp3"][1])
    assert decoded_seconds(head, "mp3") > 0
    whole = decoded_seconds(head + rest, "mp3")
    assert whole > 5 * decoded_seconds(head, "mp3")
    assert after - before == pytest.approx(whole, rel=0.1, abs=0.3)


def test_client_hanging_up_stops_the_synthesis(client, server) -> None:
    def stopped() -> list[dict]:
        return [e for e in server.log_events() if e.get("event") == "tts.stream_stopped"]

    earlier = len(stopped())
    with client.with_streaming_response.audio.speech.create(model="tts-1", voice="ash", input=LONG_TEXT) as response:
        next(response.iter_bytes())
    # The server notices the disconnect and stops before the last sentence (polled: no timing
    # is asserted, 30 s is only how long to wait before calling it a failure).
    for _ in range(300):
        if len(stopped()) > earlier:
            break
        time.sleep(0.1)
    assert len(stopped()) == earlier + 1, "the synthesis did not stop after the client left"
    event = stopped()[-1]
    assert event["reason"] == "disconnect"
    assert event["phrases_done"] < event["phrases"]
    # The server goes on serving.
    assert client.audio.speech.create(model="tts-1", voice="alloy", input="Merci.", response_format="pcm").content


def test_every_openai_voice_and_the_installed_voice_are_accepted(client) -> None:
    for voice in (*OPENAI_VOICES, INSTALLED_VOICE):
        response = client.audio.speech.create(model="gpt-4o-mini-tts", voice=voice, input="Oui.", response_format="pcm")
        assert len(response.content) > 2400, voice  # more than 50 ms of audio


def test_voice_list_names_every_accepted_voice(server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        listed = http.get("/v1/audio/voices", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    names = {v["id"]: v["speaks_with"] for v in listed["data"]}
    assert names[INSTALLED_VOICE] == INSTALLED_VOICE
    assert all(names[v] == INSTALLED_VOICE for v in OPENAI_VOICES)


def test_unknown_voice_is_refused(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="darth-vader", input=TEXT)
    assert_openai_error(caught.value, 400, "voice")
    assert "alloy" in caught.value.response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "a" * 4097}, "input"),
        ({"input": " \n\t\u200b "}, "input"),
        ({"input": "🙂🙂"}, "input"),  # nothing that can be said aloud
        ({"speed": 5.0}, "speed"),
        ({"speed": 0.2}, "speed"),
        ({"response_format": "ogg"}, "response_format"),
        ({"stream_format": "sse"}, "stream_format"),
    ],
)
def test_bad_parameters_are_refused_in_openai_shape(client, fields, param) -> None:
    request = {"model": "tts-1", "voice": "alloy", "input": TEXT, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(**request)
    assert_openai_error(caught.value, 400, param)


def test_missing_input_or_voice_names_the_parameter(server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for body, param in (({"voice": "alloy"}, "input"), ({"input": TEXT}, "voice")):
            response = http.post("/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
            assert response.status_code == 400
            assert response.json()["error"]["param"] == param


def test_input_of_4096_characters_is_accepted(client) -> None:
    """The limit itself is allowed (cut short here: the response's first bytes are enough)."""
    text = ("Le condo est à vendre. " * 200)[:4096]
    with client.with_streaming_response.audio.speech.create(
        model="tts-1", voice="alloy", input=text, response_format="pcm"
    ) as response:
        assert response.status_code == 200
        assert next(response.iter_bytes())


def test_wrong_key_is_refused(server) -> None:
    wrong = OpenAI(base_url=f"{server.url}/v1", api_key="not-the-key-0000000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert caught.value.status_code == 401
    assert set(caught.value.response.json()["error"]) == {"message", "type", "param", "code"}
