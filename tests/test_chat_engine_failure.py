"""An engine that fails gives 500 in the contract's shape and stores nothing. The failing engine
is a stand-in (a real model cannot be made to fail on demand); the rest of the app is real."""

from __future__ import annotations

from litestar.testing import TestClient

from lea_local.api.app import create_app
from lea_local.llm.base import ChatReply
from lea_local.pipeline.turns import ChatTurns
from lea_local.runtime.inference_queue import InferenceQueue
from lea_local.services import Services
from lea_local.settings import Settings
from lea_local.store.conversations import ConversationStore
from tests.fixtures.engines import LocalStandInEngine
from tests.server import API_KEY, CHAT_PATH


class BrokenEngine(LocalStandInEngine):
    """Survives the warm-up's short generations, then fails as a GPU out of memory would."""

    model_name = "broken"

    def count_prompt_tokens(self, messages):
        return sum(len(m.content) for m in messages) // 4 + 1

    def generate(self, messages, *, max_tokens, **kwargs):
        if max_tokens > 16:
            raise RuntimeError("CUDA error: out of memory")
        return ChatReply("ok", 1, 1, "stop")


def test_engine_failure_is_500_and_stores_nothing(tmp_path):
    settings = Settings(_env_file=None, api_keys=API_KEY, data_dir=tmp_path)
    store = ConversationStore.from_url(settings.effective_database_url)

    def build(_: Settings) -> Services:
        engine = BrokenEngine()
        queue = InferenceQueue("language model", max_waiting=4)
        turns = ChatTurns(
            engine=engine, store=store, llm_queue=queue, system_prompt="s", max_reply_tokens=64, temperature=0
        )
        return Services(settings=settings, store=store, chat_engine=engine, llm_queue=queue, turns=turns)

    app = create_app(settings, build=build)
    with TestClient(app, raise_server_exceptions=False) as client:
        while client.get("/ready").status_code != 200:
            pass
        r = client.post(CHAT_PATH, json={"message": "Bonjour"}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 500
    message = "The language model failed to process the request"
    assert r.json() == {"success": False, "error": message, "detail": message}
    assert "CUDA" not in r.text
    assert store.counts() == (0, 0)
