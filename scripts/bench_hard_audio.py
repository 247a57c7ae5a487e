#!/usr/bin/env python3
"""Speech recognition on hard recordings: is the recognizer's work bounded by the audio's length,
and do tones, noise and music give "no speech" rather than invented text?

Makes its recordings in a temporary directory: espeak-ng French with odd words (Québec place
names, OACIQ form codes, numbers, made-up words) at -s 80, 175 and 350, recorded by Chromium's
MediaRecorder into WebM/Opus when `chromium` is installed (else encoded by ffmpeg, and the table
says so); pure tones; white and pink noise; music-like chords and a hummed vowel; a babble of five mixed voices;
clipped loud speech; 8 kHz telephone-band speech; 118 s of speech. Each is decoded by the
server's own `decode_audio` (ffmpeg) and transcribed --repeat times by the recognizer the server
builds (settings from the environment; tiny preset and ./models unless LEA_PRESET /
LEA_MODELS_DIR say otherwise).

Prints per input: audio seconds, max and median recognizer seconds, max recognizer seconds /
audio seconds, the most CPU seconds one run used (all threads; less sensitive than wall time to
other work on the machine, which the load averages printed show), word error rate against the
spoken text (speech inputs, worst run), and the outcome. Exits 1
when the largest ratio is above 1.0 or when a tone, noise or music gave text.

usage: .venv/bin/python scripts/bench_hard_audio.py [--repeat 10] [--only NAME…] [--wer]
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LEA_PRESET", "tiny")
os.environ.setdefault("LEA_MODELS_DIR", str(REPO / "models"))

from lea_local.asr.base import NoSpeech, SpeechRecognizer  # noqa: E402
from lea_local.asr.decode import decode_audio  # noqa: E402
from lea_local.services import build_recognizer, resolve_model_paths  # noqa: E402
from lea_local.settings import Settings  # noqa: E402
from tests.audio import chords, hum, manifest, normalise_words  # noqa: E402

RATE = 16_000
ODD_WORDS = (
    "Bonjour, je cherche un quatre et demie au rez-de-chaussée, rue Saint-Denis à Chicoutimi, "
    "près de Sainte-Anne-de-la-Pérade et de Rivière-du-Loup. Le formulaire PA-1234 de l'OACIQ "
    "et la déclaration DV-27 sont signés le 23 mars 2025 à 14 h 30, pour 437 999 dollars. "
    "Le plombrifère de la cuisine frandoulise avec le trémoussoir du grenier."
)
# Sentences for the babble and for the long recording.
SENTENCES = [
    "La visite de l'appartement est prévue demain matin à neuf heures avec les acheteurs.",
    "Le notaire attend le diagnostic de performance énergétique avant la signature.",
    "Nous avons reçu trois offres pour la maison de Kamouraska, la meilleure à 312 000 dollars.",
    "Le locataire du deuxième étage quitte le logement à la fin du mois de juin.",
    "Pouvez-vous envoyer le formulaire de l'OACIQ à Madame Tremblay à Shawinigan ?",
    "La copropriété de Pointe-aux-Trembles vote les travaux de toiture en assemblée.",
]

Expect = Literal["speech", "no speech", "either"]


@dataclass
class Recording:
    name: str
    data: bytes
    expect: Expect
    reference: str | None = None  # the words spoken, for a word error rate
    note: str = ""


@dataclass
class Result:
    recording: Recording
    audio_seconds: float
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return max(self.seconds) / self.audio_seconds

    @property
    def produced_text(self) -> bool:
        return any(outcome != "no speech" for outcome in self.outcomes)


# --- making the recordings ----------------------------------------------------------------------


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def ffmpeg(*args: str) -> None:
    run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args])


def espeak(path: Path, text: str, *, rate: int = 175, voice: str = "fr", pitch: int = 50) -> Path:
    run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(path), text])
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV (espeak-ng writes 22 050 Hz) as float32 at 16 kHz."""
    with wave.open(str(path)) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = pcm.astype(np.float32) / 32768
    positions = np.arange(int(len(samples) * RATE / rate)) * rate / RATE
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def to_webm(source: Path, target: Path, *filters: str) -> bytes:
    """WebM/Opus as a browser sends it, encoded by ffmpeg."""
    af = ["-af", ",".join(filters)] if filters else []
    opus = ["-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k", "-f", "webm"]
    ffmpeg("-i", str(source), *af, *opus, str(target))
    return target.read_bytes()


class ChromiumRecorder:
    """Plays a WAV into Chromium's fake microphone and records it with MediaRecorder, as the
    ImmoAssist page does; the recording comes back by a POST to a server on 127.0.0.1."""

    PAGE = b"""<!doctype html><script>
(async () => {
  const ms = Number(new URLSearchParams(location.search).get('ms'));
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const recorder = new MediaRecorder(stream, {mimeType: 'audio/webm;codecs=opus'});
    const chunks = [];
    recorder.ondataavailable = e => chunks.push(e.data);
    recorder.onstop = () => fetch('/upload', {method: 'POST', body: new Blob(chunks, {type: 'audio/webm'})});
    recorder.start(250);
    setTimeout(() => recorder.stop(), ms);
  } catch (e) { fetch('/error', {method: 'POST', body: String(e)}); }
})();
</script>"""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def record(self, wav: Path, seconds: float) -> bytes:
        received: dict[str, bytes] = {}
        done = threading.Event()
        page = self.PAGE

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def do_POST(self) -> None:
                received[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.end_headers()
                done.set()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/rec.html?ms={int(seconds * 1000) + 500}"
        with tempfile.TemporaryDirectory() as profile:
            browser = subprocess.Popen(
                [
                    self.binary,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    f"--user-data-dir={profile}",
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={wav}%noloop",
                    url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                if not done.wait(seconds + 60):
                    raise RuntimeError("Chromium sent no recording")
            finally:
                browser.terminate()
                browser.wait(10)
                server.shutdown()
        if "/upload" not in received:
            raise RuntimeError(f"Chromium could not record: {received.get('/error', b'').decode()}")
        return received["/upload"]


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def make_recordings(directory: Path, chromium: str | None) -> list[Recording]:
    recorder = ChromiumRecorder(chromium) if chromium else None
    via = "Chromium MediaRecorder" if recorder else "ffmpeg (no chromium)"
    recordings: list[Recording] = []

    for rate in (80, 175, 350):
        wav = espeak(directory / f"odd-{rate}.wav", ODD_WORDS, rate=rate)
        data = recorder.record(wav, wav_seconds(wav)) if recorder else to_webm(wav, directory / f"odd-{rate}.webm")
        recordings.append(Recording(f"espeak-fr-s{rate}.webm", data, "speech", ODD_WORDS, via))

    lavfi = {
        "tone-440Hz": "sine=frequency=440:duration=5",
        "tone-1kHz": "sine=frequency=1000:duration=8",
        "tone-beeps": "aevalsrc='0.4*sin(2*PI*800*t)*lt(mod(t,1),0.3)':d=8",
        "noise-white": "anoisesrc=color=white:amplitude=0.3:d=8",
        "noise-pink": "anoisesrc=color=pink:amplitude=0.5:d=8",
    }
    for name, source in lavfi.items():
        target = directory / f"{name}.webm"
        ffmpeg("-f", "lavfi", "-i", source, "-c:a", "libopus", "-b:a", "32k", "-f", "webm", str(target))
        recordings.append(Recording(f"{name}.webm", target.read_bytes(), "no speech"))
    music = write_wav(directory / "chords.wav", chords(12))
    recordings.append(Recording("music-chords.webm", to_webm(music, directory / "chords.webm"), "no speech"))
    # A hummed vowel: the one sound here that Silero VAD partly takes for speech.
    hummed = write_wav(directory / "hum.wav", hum(10))
    recordings.append(Recording("music-hum.webm", to_webm(hummed, directory / "hum.webm"), "no speech"))

    voices = [("fr", 150, 40), ("fr+m3", 190, 60), ("fr+f2", 170, 70), ("fr+f4", 210, 55), ("fr+m7", 160, 30)]
    parts = []
    for i, (voice, rate, pitch) in enumerate(voices):
        text = " ".join(SENTENCES[i:] + SENTENCES[:i])[:220]
        parts.append(espeak(directory / f"babble-{i}.wav", text, rate=rate, voice=voice, pitch=pitch))
    babble = directory / "babble.wav"
    inputs = [arg for part in parts for arg in ("-i", str(part))]
    ffmpeg(*inputs, "-filter_complex", f"amix=inputs={len(parts)}:duration=shortest:normalize=0", str(babble))
    recordings.append(Recording("babble-5-voices.webm", to_webm(babble, directory / "babble.webm"), "either"))

    speech = espeak(directory / "speech.wav", " ".join(SENTENCES[:3]), rate=175)
    reference = " ".join(SENTENCES[:3])
    # 30 dB louder, hard-clipped at full scale: a microphone far too close.
    loud = write_wav(directory / "clipped.wav", np.clip(read_wav(speech) * 30, -1, 1))
    recordings.append(Recording("clipped-loud.webm", to_webm(loud, directory / "clipped.webm"), "speech", reference))
    telephone = directory / "telephone.wav"
    ffmpeg("-i", str(speech), "-af", "highpass=300,lowpass=3400", "-ar", "8000", str(telephone))
    recordings.append(Recording("telephone-8kHz.wav", telephone.read_bytes(), "speech", reference))

    long_text: list[str] = []
    long_wav = directory / "long.wav"
    while not long_text or wav_seconds(long_wav) < 118:
        long_text += SENTENCES
        espeak(long_wav, " ".join(long_text), rate=160)
    long_webm = to_webm(long_wav, directory / "long.webm", "atrim=0:118")
    recordings.append(Recording("speech-118s.webm", long_webm, "speech"))
    return recordings


# --- measuring ----------------------------------------------------------------------------------


def measure(recognizer: SpeechRecognizer, recording: Recording, settings: Settings, repeat: int) -> Result:
    decoded = decode_audio(
        recording.data, max_seconds=settings.max_audio_seconds, timeout=settings.decode_timeout_seconds
    )
    result = Result(recording, decoded.seconds)
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            outcome = recognizer.transcribe(decoded.samples).text
        except NoSpeech:
            outcome = "no speech"
        result.seconds.append(time.perf_counter() - started)
        result.cpu_seconds.append(time.process_time() - cpu_started)
        result.outcomes.append(outcome)
    return result


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalise_words(reference), normalise_words(hypothesis) or "<empty>"))


def print_table(results: list[Result]) -> None:
    print(f"\n{'input':<22} {'audio s':>7} {'max s':>7} {'med s':>7} {'max/aud':>7} {'cpu s':>6} {'wer':>5}  outcome")
    for r in results:
        first = r.outcomes[0]
        distinct = len(set(r.outcomes))
        wer = ""
        if r.recording.reference and first != "no speech":
            wer = f"{max(word_error_rate(r.recording.reference, o) for o in r.outcomes):.2f}"
        outcome = first if len(first) <= 70 else first[:67] + "..."
        if distinct > 1:
            texts = sum(o != "no speech" for o in r.outcomes)
            outcome = f"[{distinct} outcomes, {texts}/{len(r.outcomes)} text] {outcome}"
        print(
            f"{r.recording.name:<22} {r.audio_seconds:>7.1f} {max(r.seconds):>7.2f} "
            f"{statistics.median(r.seconds):>7.2f} {r.ratio:>7.3f} {max(r.cpu_seconds):>6.1f} {wer:>5}  {outcome}"
        )


def corpus_wer(recognizer: SpeechRecognizer, directory: Path, initial_prompt: str | None = None) -> float:
    import jiwer

    clips = manifest(directory)
    references, hypotheses = [], []
    for clip in clips:
        samples = decode_audio(clip.path.read_bytes(), max_seconds=120, timeout=60).samples
        references.append(normalise_words(clip.reference))
        text = recognizer.transcribe(samples, initial_prompt=initial_prompt).text
        hypotheses.append(normalise_words(text))
    return float(jiwer.wer(references, hypotheses))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="transcriptions per input (default 10)")
    parser.add_argument("--only", nargs="*", help="inputs whose name contains one of these")
    parser.add_argument("--wer", action="store_true", help="also the WER over the human French clips")
    parser.add_argument(
        "--audio-dir",
        type=Path,
        default=REPO / "tests" / "fixtures" / "audio" / "fr",
        help="human clips with a manifest.tsv, for --wer (same as /work/shared/audio/fr)",
    )
    parser.add_argument("--no-chromium", action="store_true", help="encode with ffmpeg even if chromium is there")
    parser.add_argument("--keep", type=Path, help="copy the recordings into this directory")
    args = parser.parse_args()

    settings = Settings()
    asr_path = settings.asr_model or resolve_model_paths(settings).asr
    started = time.perf_counter()
    recognizer = build_recognizer(settings, asr_path)
    print(
        f"recognizer {recognizer.model_name} loaded in {time.perf_counter() - started:.1f} s "
        f"(engine {settings.asr_engine}, beam {settings.asr_beam_size}, cores {os.cpu_count()})"
    )

    chromium = None if args.no_chromium else (shutil.which("chromium") or shutil.which("chromium-browser"))
    with tempfile.TemporaryDirectory(prefix="lea-hard-audio-") as tmp:
        started = time.perf_counter()
        recordings = make_recordings(Path(tmp), chromium)
        print(
            f"{len(recordings)} recordings made in {time.perf_counter() - started:.0f} s; "
            f"espeak-ng speech recorded by {recordings[0].note}"
        )
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for recording in recordings:
                (args.keep / recording.name).write_bytes(recording.data)
    if args.only:
        recordings = [r for r in recordings if any(word in r.name for word in args.only)]

    # One transcription first: the first call pays for lazy initialisation (VAD model, kernels).
    try:
        recognizer.transcribe(np.zeros(RATE, dtype=np.float32))
    except NoSpeech:
        pass
    load_before = os.getloadavg()[0]
    results = []
    for recording in recordings:
        results.append(measure(recognizer, recording, settings, args.repeat))
        r = results[-1]
        print(f"  {recording.name}: max {max(r.seconds):.2f} s for {r.audio_seconds:.1f} s of audio", flush=True)
    print_table(results)

    worst = max(results, key=lambda r: r.ratio)
    invented = [r.recording.name for r in results if r.recording.expect == "no speech" and r.produced_text]
    print(f"\nload average (1 min) at the start {load_before:.1f}, at the end {os.getloadavg()[0]:.1f}")
    print(
        f"largest recognizer seconds / audio seconds: {worst.ratio:.3f} ({worst.recording.name}), "
        f"{args.repeat} runs per input"
    )
    if invented:
        print(f"text invented from non-speech: {', '.join(invented)}")
    if args.wer:
        print(
            f"WER over the human French clips in {args.audio_dir}: "
            f"{corpus_wer(recognizer, args.audio_dir):.3f} with the server's vocabulary prompt, "
            f"{corpus_wer(recognizer, args.audio_dir, initial_prompt=''):.3f} without a prompt"
        )
    return 1 if worst.ratio > 1.0 or invented else 0


if __name__ == "__main__":
    sys.exit(main())
