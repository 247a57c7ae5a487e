"""Remote engines over OpenAI-compatible HTTP, all real processes on 127.0.0.1:

- llama-cpp-python's OpenAI server (`python -m llama_cpp.server`, SmolLM2) as the remote LLM of a
  lea-local whose speech engines are local;
- a lea-local in engines-only mode (tiny models) as the remote speech recogniser and voice of a
  lea-local whose three engines are remote and whose models directory is empty."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lea_local.llm.base import ChatMessage
from lea_local.llm.remote_engine import RemoteChatEngine, estimate_prompt_tokens
from lea_local.runtime.remote_http import EngineUnavailable, RemoteEngineError
from lea_local.services import read_system_prompt
from lea_local.settings import Settings
from lea_local.tools.server_process import free_port
from tests.audio import BROWSER_FORMATS, CLIP, CLIP_KEY_WORDS, encode, normalise_words
from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer
from tests.waiting import wait_for

HEADERS = {"X-API-Key": API_KEY}
LLM_KEY = "remote-llm-key-5b0e2d71c4"
# llama-cpp-python's server does not tell its context window: lea-local is told it.
LLM_CONTEXT = 2048
GGUF = "smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"
# llama-cpp-python's server prints this when its client leaves mid-stream.
REMOTE_HANG_UP_LINE = "Disconnected from client"
# llama.cpp prints its timings when a generation ends (llama_perf_context_print).
REMOTE_GENERATION_END = "total time ="


class LlamaCppPythonServer:
    """`python -m llama_cpp.server` on a fixed port (so that it can be stopped and started again)."""

    def __init__(self, model: Path, log_path: Path) -> None:
        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> LlamaCppPythonServer:
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
            "--port", str(self.port), "--n_ctx", str(LLM_CONTEXT), "--n_threads", "2", "--api_key", LLM_KEY,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", headers=self.headers, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server not up after {timeout} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {LLM_KEY}"}

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """The server's own count of a prompt: the usage of a one-token completion."""
        body = {"messages": messages, "max_tokens": 1, "temperature": 0}
        r = httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=self.headers, timeout=60)
        r.raise_for_status()
        return r.json()["usage"]["prompt_tokens"]


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LlamaCppPythonServer]:
    server = LlamaCppPythonServer(models_dir / GGUF, tmp_path_factory.mktemp("llama-cpp-server") / "server.log")
    server.start()
    yield server
    server.stop()


def remote_llm_env(llm: LlamaCppPythonServer) -> dict[str, str]:
    return {
        "LEA_LLM_URL": f"{llm.url}/v1",
        "LEA_LLM_API_KEY": LLM_KEY,
        "LEA_LLM_CONTEXT_SIZE": str(LLM_CONTEXT),
        "LEA_LLM_MAX_REPLY_TOKENS": "16",
    }


@pytest.fixture(scope="module")
def lea(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, llm_server) -> Iterator[LeaServer]:
    """A lea-local whose LLM is the llama_cpp.server, its speech engines local."""
    server = LeaServer(tmp_path_factory.mktemp("remote-llm"), models_dir, remote_llm_env(llm_server))
    server.start()
    yield server
    server.stop()


def system_message() -> dict[str, str]:
    return {"role": "system", "content": read_system_prompt(Settings(api_keys=[API_KEY]))}


@pytest.mark.slow
def test_text_turns_count_their_prompt_exactly_as_the_remote_server(lea, llm_server):
    with lea.client() as client:
        first = lea.chat(client, "Bonjour, qui êtes-vous ?")
        assert first.status_code == 200, first.text
        body = first.json()
        second = lea.chat(client, "Et quels formulaires pour une promesse d'achat ?", session_id=body["session_id"])
        assert second.status_code == 200, second.text
    assert body["provider"] == "llama-cpp-python-server" and body["model"] == MODEL_NAME
    assert body["response"].strip()
    # The server streams no usage: lea-local counts the prompt itself, through the server's
    # tokeniser, and must find what the server counts for the same messages.
    assert body["usage"]["prompt_tokens"] == llm_server.prompt_tokens(
        [system_message(), {"role": "user", "content": "Bonjour, qui êtes-vous ?"}]
    )
    history = [
        system_message(),
        {"role": "user", "content": "Bonjour, qui êtes-vous ?"},
        {"role": "assistant", "content": body["response"]},  # the stored reply is the history
        {"role": "user", "content": "Et quels formulaires pour une promesse d'achat ?"},
    ]
    assert second.json()["usage"]["prompt_tokens"] == llm_server.prompt_tokens(history)
    assert 0 < second.json()["usage"]["completion_tokens"] <= 16
    # The key sent to the engine server never reaches lea-local's log.
    assert LLM_KEY not in lea.log_text()


@pytest.mark.slow
def test_a_voice_turn_is_answered_by_the_remote_llm(lea):
    with lea.client() as client:
        args, mime, name = BROWSER_FORMATS["webm-opus"]
        r = client.post(VOICE_PATH, files={"audio": (name, encode(CLIP, args), mime)}, headers=HEADERS)
    assert r.status_code == 200, r.text
    body = r.json()
    heard = normalise_words(body["transcription"]).split()
    assert sum(normalise_words(w) not in heard for w in CLIP_KEY_WORDS) <= 1, body["transcription"]
    assert body["provider"] == "llama-cpp-python-server" and body["response"].strip()


def tokens_generated(lea) -> float:
    """lea-local's count of tokens from completed generations (a cancelled one adds none)."""
    found = re.search(r"^lea_llm_tokens_generated_total (\S+)$", httpx.get(f"{lea.url}/metrics").text, re.M)
    assert found, "no token counter in /metrics"
    return float(found.group(1))


def test_a_hang_up_mid_stream_closes_the_remote_stream(lea, llm_server):
    hang_ups_before = llm_server.log_text().count(REMOTE_HANG_UP_LINE)
    generations_before = llm_server.log_text().count(REMOTE_GENERATION_END)
    tokens_before = tokens_generated(lea)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Count from 1 to 300, one number per line."}],
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
    }
    with lea.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=body, headers=HEADERS) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break  # the first words: hang up
    # Either lea-local cancels the generation, or it completes and its tokens are counted.
    wait_for(
        lambda: any(e.get("event") == "llm.cancelled" for e in lea.log_events()),
        "lea-local cancelled",
        while_possible=lambda: tokens_generated(lea) == tokens_before,
    )
    # Either the remote server sees its client leave, or it finishes generating the reply.
    wait_for(
        lambda: llm_server.log_text().count(REMOTE_HANG_UP_LINE) > hang_ups_before,
        "the remote stream closed",
        while_possible=lambda: llm_server.log_text().count(REMOTE_GENERATION_END) == generations_before,
    )
    # The hang-up closed it, not lea-local's loop stop.
    assert not any(e.get("event") == "llm.loop_stopped" for e in lea.log_events())


@pytest.mark.slow
def test_the_remote_llm_down_gives_503_at_once_then_service_resumes(lea, llm_server):
    llm_server.stop()
    try:
        with lea.client() as client:
            r = lea.chat(client, "Bonjour")
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["success"] is False and "language model" in r.json()["detail"]
            openai = client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Bonjour"}]},
                headers=HEADERS,
            )
            assert openai.status_code == 503 and openai.json()["error"]["message"]
            assert "Retry-After" in openai.headers
    finally:
        llm_server.start()
    with lea.client() as client:
        r = lea.chat(client, "Bonjour")
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "llama-cpp-python-server"


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[LeaServer]:
    """A lea-local serving only its engines (tiny models) over /v1."""
    server = LeaServer(tmp_path_factory.mktemp("engines-only"), models_dir, {"LEA_ENGINES_ONLY": "true"})
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_engines_only_serves_the_openai_api_and_no_agent_route(engines):
    with engines.client() as client:
        assert client.get("/v1/models", headers=HEADERS).status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.post(CHAT_PATH, json={"message": "Bonjour"}, headers=HEADERS).status_code == 404
        assert client.get("/api/external/health", headers=HEADERS).status_code == 404


@pytest.mark.slow
def test_a_replica_whose_three_engines_are_remote_loads_no_model_and_answers_a_voice_turn(
    tmp_path, llm_server, engines
):
    empty_models = tmp_path / "no-models"
    empty_models.mkdir()
    replica = LeaServer(
        tmp_path / "replica",
        empty_models,  # nothing to load: the replica could not start if it tried
        {
            **remote_llm_env(llm_server),
            "LEA_ASR_URL": f"{engines.url}/v1",
            "LEA_ASR_API_KEY": API_KEY,
            "LEA_TTS_URL": engines.url,
            "LEA_TTS_API_KEY": API_KEY,
        },
    )
    replica.start()
    try:
        with replica.client() as client:
            ready = client.get("/ready").json()
            args, mime, name = BROWSER_FORMATS["webm-opus"]
            r = client.post(VOICE_PATH, files={"audio": (name, encode(CLIP, args), mime)}, headers=HEADERS)
            assert r.status_code == 200, r.text
            body = r.json()
            audio = client.get(body["assistant_audio_url"])
        assert audio.status_code == 200
        # The engine server's models, as it names them.
        with engines.client() as client:
            engine_models = client.get("/ready").json()["models"]
        assert ready["models"] == {"llm": MODEL_NAME, "asr": engine_models["asr"], "tts": "alloy"}
        loading = next(e for e in replica.log_events() if e.get("message") == "loading models")
        assert loading["llm"].startswith(llm_server.url) and loading["asr"].startswith(engines.url)
        assert loading["tts"].startswith(engines.url)
        heard = normalise_words(body["transcription"]).split()
        assert sum(normalise_words(w) not in heard for w in CLIP_KEY_WORDS) <= 1, body["transcription"]
        assert body["response"].strip()
        assert decoded_seconds(audio.content) > 0.5
        # The engine server did the recognition and the speech.
        routes = {(e.get("route"), e.get("status")) for e in engines.log_events()}
        assert ("/v1/audio/transcriptions", 200) in routes and ("/v1/audio/speech", 200) in routes
    finally:
        replica.stop()


def decoded_seconds(data: bytes) -> float:
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        input=data,
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 32000


# --- narrow unit tests: the requests made to servers not installed here (llama-server, vLLM) -----
def fake_server(routes: dict[tuple[str, str], object], seen: list[tuple[str, dict]]) -> httpx.MockTransport:
    """Answers each (method, path) with its JSON, or calls it with the request body; 404 elsewhere."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        seen.append((request.url.path, body))
        answer = routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"error": {"message": "not found"}})
        if callable(answer):
            return answer(body)
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handle)


def sse(*chunks: dict) -> httpx.Response:
    text = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, content=text.encode(), headers={"Content-Type": "text/event-stream"})


def delta(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


def test_llama_server_prompts_are_counted_by_its_template_and_tokenizer():
    seen: list[tuple[str, dict]] = []
    routes = {
        ("GET", "/v1/models"): {"data": [{"id": "/models/mistral-nemo.gguf", "meta": {"n_ctx_train": 128000}}]},
        ("GET", "/props"): {"default_generation_settings": {"n_ctx": 8192}, "total_slots": 4},
        ("POST", "/apply-template"): lambda body: httpx.Response(
            200, json={"prompt": " ".join(f"<{m['role']}> {m['content']}" for m in body["messages"])}
        ),
        ("POST", "/tokenize"): lambda body: httpx.Response(
            200, json={"tokens": list(range(len(body["content"].split()) + 1))}
        ),
        ("POST", "/v1/chat/completions"): lambda body: sse(
            delta("Bonjour"),
            delta(" !", "stop"),
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
        ),
    }
    engine = RemoteChatEngine("http://gpu:8080", transport=fake_server(routes, seen))
    assert (engine.provider, engine.model_name, engine.context_size) == ("llama-cpp-server", "mistral-nemo", 8192)
    messages = [ChatMessage("system", "Tu es Léa."), ChatMessage("user", "Bonjour")]
    # "<system> Tu es Léa. <user> Bonjour": 6 words, + BOS from add_special.
    assert engine.count_prompt_tokens(messages) == 7
    assert seen[-1] == ("/tokenize", {"content": "<system> Tu es Léa. <user> Bonjour", "add_special": True})
    pieces: list[str] = []
    reply = engine.generate(messages, max_tokens=16, temperature=0.3, on_text=pieces.append)
    assert pieces == ["Bonjour", " !"] and reply.text == "Bonjour !"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.finish_reason) == (7, 2, "stop")
    sent = seen[-1][1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "/models/mistral-nemo.gguf" and sent["repeat_penalty"] == 1.1


def test_vllm_prompts_are_counted_by_its_tokenize_endpoint_with_the_messages():
    seen: list[tuple[str, dict]] = []

    def tokenize(body: dict) -> httpx.Response:
        if "messages" in body:
            return httpx.Response(200, json={"count": 42, "max_model_len": 32768, "tokens": [0] * 42})
        return httpx.Response(200, json={"count": 1, "max_model_len": 32768, "tokens": [0]})

    routes = {("GET", "/v1/models"): {"data": [{"id": "Qwen/Qwen2.5-7B-Instruct"}]}, ("POST", "/tokenize"): tokenize}
    engine = RemoteChatEngine("http://gpu:8000/v1", transport=fake_server(routes, seen))
    assert (engine.provider, engine.model_name, engine.context_size) == ("vllm", "Qwen/Qwen2.5-7B-Instruct", 32768)
    assert engine.count_prompt_tokens([ChatMessage("user", "Bonjour")]) == 42
    assert seen[-1][1] == {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "messages": [{"role": "user", "content": "Bonjour"}],
        "add_generation_prompt": True,
    }


def test_a_server_that_cannot_tokenize_gets_a_conservative_estimate_and_its_refusals_are_503():
    seen: list[tuple[str, dict]] = []
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "7"}, json={"error": {"message": "busy"}}),
            httpx.Response(500, json={"error": {"message": "CUDA out of memory"}}),
        ]
    )
    routes = {
        ("GET", "/v1/models"): {"data": [{"id": "some-model", "owned_by": "someone"}]},
        ("POST", "/v1/chat/completions"): lambda body: next(answers),
    }
    engine = RemoteChatEngine("http://llm:9000", context_size=4096, transport=fake_server(routes, seen))
    assert engine.provider == "openai-compatible"
    messages = [ChatMessage("system", "x" * 250), ChatMessage("user", "Bonjour")]
    # 257 characters / 2.5, + 8 per message + 16: above any real tokeniser's count.
    assert engine.count_prompt_tokens(messages) == estimate_prompt_tokens(messages) == 103 + 16 + 16
    with pytest.raises(EngineUnavailable) as refused:
        engine.generate(messages, max_tokens=16, temperature=0.3)
    assert refused.value.retry_after == 7
    with pytest.raises(RemoteEngineError, match="CUDA out of memory"):
        engine.generate(messages, max_tokens=16, temperature=0.3)
