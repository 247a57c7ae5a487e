"""The scaled-out deployment of issue 10, composed once for a test session, every part a real
process on 127.0.0.1:

    client --https--> nginx (TLS, round robin) --> replica a --+--> PostgreSQL (conversations)
                                               --> replica b --+--> LLM engine (/v1/chat/completions)
                                                   (one LEA_AUDIO_DIR shared by both)

- PostgreSQL: the run's throwaway cluster (tests/postgres.py), a database of its own.
- The LLM engine: one lea-local serving its engines only (`serve --engines-only`, the tiny
  model) with content logging on, so that its log shows every prompt it received, under the
  request id of the turn it serves (the replicas pass X-Request-ID on).
- Two replicas whose LLM is that engine (speech stays local), on that database.
- nginx rendered from deploy/nginx/lea-local.conf with a certificate the test makes.

Who answered what is read from the logs: each replica logs one `request` line per request with
its X-Request-ID, which the load test sets per turn."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import db_query
from tests.nginx import Nginx
from tests.postgres import PostgresCluster
from tests.server import API_KEY, LeaServer

# Short replies keep 200 turns affordable on 2 cores; budgets long enough that a busy CI machine
# never turns a slow turn into a 504 or an admission refusal (the outages are what is tested).
REPLICA_SETTINGS = {
    "LEA_LLM_MAX_REPLY_TOKENS": "16",
    "LEA_REQUEST_TIMEOUT_SECONDS": "300",
    "LEA_LLM_QUEUE_SIZE": "64",
    "LEA_ASR_QUEUE_SIZE": "64",
    "LEA_TTS_QUEUE_SIZE": "64",
    "LEA_LOG_CONTENT": "true",
    "LEA_ASR_THREADS": "1",
    # Two generations at once per replica: the engine queues them, and one replica alone (the
    # other killed) still keeps it busy.
    "LEA_LLM_PARALLEL": "2",
}
ENGINE_SETTINGS = {
    "LEA_ENGINES_ONLY": "true",
    # One thread: llama.cpp's threads spin while they wait for each other, which costs dearly
    # on 2 cores busy with the replicas' speech too.
    "LEA_LLM_THREADS": "1",
    # Its admission estimates a job as a reply of this length: the replicas' replies.
    "LEA_LLM_MAX_REPLY_TOKENS": "16",
    "LEA_LOG_CONTENT": "true",
    "LEA_LLM_QUEUE_SIZE": "64",
    "LEA_REQUEST_TIMEOUT_SECONDS": "300",
    "LEA_LLM_PROMPT_CACHE_MB": "256",
}


@dataclass
class Topology:
    postgres: PostgresCluster
    database_url: str
    engine: LeaServer
    replicas: dict[str, LeaServer]
    nginx: Nginx
    audio_dir: Path
    _stopped: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, base: Path, models_dir: Path, postgres: PostgresCluster) -> Topology:
        database_url = postgres.new_database()
        audio_dir = base / "shared-audio"
        audio_dir.mkdir(parents=True)
        # A short system prompt: what is checked is each turn's history, and a prompt the engine
        # evaluates in less time lets 200 turns run in CI's minutes.
        system_prompt = base / "system-prompt.txt"
        system_prompt.write_text("Tu es Léa, l'assistante des courtiers immobiliers. Réponds en une phrase.\n")
        engine = LeaServer(base / "engine", models_dir, ENGINE_SETTINGS)
        nginx = Nginx()  # its port first: replica a's public base URL names it
        common = {
            **REPLICA_SETTINGS,
            "LEA_DATABASE_URL": database_url,
            "LEA_LLM_URL": f"{engine.url}/v1",
            "LEA_LLM_API_KEY": API_KEY,
            "LEA_AUDIO_DIR": str(audio_dir),
            "LEA_KNOWLEDGE_DIR": str(base / "shared-knowledge"),  # as deploy/systemd shares it
            "LEA_SYSTEM_PROMPT_FILE": str(system_prompt),
        }
        # a names the https origin itself; b builds it from the Host and X-Forwarded-Proto nginx sends.
        replicas = {
            "a": LeaServer(base / "replica-a", models_dir, {**common, "LEA_PUBLIC_BASE_URL": nginx.url}),
            "b": LeaServer(base / "replica-b", models_dir, common),
        }
        topology = cls(postgres, database_url, engine, replicas, nginx, audio_dir)
        try:
            engine.spawn()
            for replica in replicas.values():  # they wait for the engine while loading speech
                replica.spawn()
            engine.wait_until_ready(300)
            for replica in replicas.values():
                replica.wait_until_ready(300)
            nginx.start([replica.port for replica in replicas.values()])
        except BaseException:
            topology.stop()
            raise
        return topology

    def stop(self) -> None:
        self.nginx.stop()
        for server in (*self.replicas.values(), self.engine):
            signal_group(server, signal.SIGCONT)
            server.stop()

    # --- who answered what ------------------------------------------------------------------
    def answered_by(self) -> dict[str, set[str]]:
        """Request id → the replicas that logged a request under it (one, for a turn that reached one)."""
        found: dict[str, set[str]] = defaultdict(set)
        for name, replica in self.replicas.items():
            for event in replica.log_events():
                if event.get("event") == "request" and event.get("request_id"):
                    found[event["request_id"]].add(name)
        return found

    def engine_prompts(self) -> dict[str, list[list[dict]]]:
        """Request id → the prompts (messages) the LLM engine received under it."""
        found: dict[str, list[list[dict]]] = defaultdict(list)
        for event in self.engine.log_events():
            if event.get("event") == "llm.prompt" and "prompt" in event and event.get("request_id"):
                found[event["request_id"]].append(event["prompt"])
        return found

    # --- what the database holds ------------------------------------------------------------
    def stored(self, session_ids: list[str]) -> dict[str, list[list[tuple]]]:
        """Session → its conversations (oldest first), each its messages in order as
        (role, content, model, completion_tokens), read straight from PostgreSQL."""
        rows = db_query(
            self.replicas["a"],
            "SELECT c.session_id, c.id, m.role, m.content, m.model, m.completion_tokens "
            "FROM conversations c JOIN messages m ON m.conversation_id = c.id "
            "WHERE c.session_id = ANY(:sessions) ORDER BY c.id, m.id",
            sessions=session_ids,
        )
        conversations: dict[str, dict[int, list[tuple]]] = defaultdict(dict)
        for session_id, conversation_id, *message in rows:
            conversations[session_id].setdefault(conversation_id, []).append(tuple(message))
        return {session: list(by_id.values()) for session, by_id in conversations.items()}


def signal_group(server: LeaServer, signum: int) -> None:
    """The server and its children (ffmpeg encoders): each runs in a session of its own."""
    if server.process is not None and server.process.poll() is None:
        os.killpg(server.process.pid, signum)
