"""The Litestar application: routes, guard, error shape, and a lifespan that loads the engines
in the background so that /health and /ready answer while models load."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import anyio
import anyio.to_thread
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from lea_local import __version__
from lea_local.api.auth import require_admin_key_to_write, require_api_key, require_api_key_if_configured
from lea_local.api.chat import chat, chat_stream
from lea_local.api.console import console_router, console_status, openapi_pages_middleware, openapi_render_plugins
from lea_local.api.erase import erase, purge_expired
from lea_local.api.errors import exception_handlers, still_starting
from lea_local.api.health import agent_health, health, ready
from lea_local.api.knowledge import knowledge_routes
from lea_local.api.media import tts_audio
from lea_local.api.metrics import metrics
from lea_local.api.openai import openai_router
from lea_local.api.realtime import realtime
from lea_local.api.shutdown import Drain
from lea_local.api.voice import chat_voice, chat_voice_stream
from lea_local.asr.decode import keep_temp_dir_clean
from lea_local.runtime import startup
from lea_local.runtime.observability import Metrics, RequestLogMiddleware
from lea_local.services import Services, build_services
from lea_local.settings import Settings
from lea_local.store.database import utcnow

log = logging.getLogger(__name__)

# A chat message is at most a few thousand characters; nothing JSON needs more.
JSON_BODY_LIMIT = 1_000_000


@dataclass
class Runtime:
    """What the lifespan has loaded so far."""

    services: Services | None = None
    ready: bool = False
    load_error: str | None = None


def _services(state: State) -> Services:
    runtime: Runtime = state.runtime
    if not runtime.ready or runtime.services is None:
        raise still_starting()
    return runtime.services


def create_app(settings: Settings, build: Callable[[Settings], Services] = build_services) -> Litestar:
    """`build` makes the engines at startup; a narrow unit test may pass its own."""
    api_keys = settings.require_api_keys()
    admin_keys = settings.require_admin_keys()
    runtime = Runtime()
    app_metrics = Metrics()
    drain = Drain()  # the requests under way, ended as 503s when a stopping server's grace period is over

    async def load() -> None:
        try:
            started = time.perf_counter()
            startup.reset()
            services = await anyio.to_thread.run_sync(build, settings)
            loaded = time.perf_counter()
            runtime.services = services
            await anyio.to_thread.run_sync(services.warm_up)
            timings = {
                "load_seconds": round(loaded - started, 2),
                "warm_up_seconds": round(time.perf_counter() - loaded, 2),
            }
        except startup.StartupStopped as exc:
            # SIGTERM while waiting for a remote engine or the database: no need to wait it out.
            log.warning("start-up stopped: %s", exc, extra={"event": "startup.stopped"})
            return
        except Exception as exc:
            log.exception("start-up failed (models or database); stopping the server")
            runtime.load_error = f"{type(exc).__name__}: {exc}"
            os.kill(os.getpid(), signal.SIGTERM)  # `lea-local serve` then exits non-zero
            return
        for queue in services.queues():
            app_metrics.track_queue(queue.name, lambda q=queue: q.depth)
        if not services.chat_engine.remote:  # a remote server's prompt cache is its own
            app_metrics.track_prompt_cache(services.chat_engine.prompt_cache_stats)
        runtime.ready = True
        log.info("ready", extra={"event": "ready", "models": services.model_names(), **timings})

    async def sweep_expired_audio() -> None:
        period = min(max(settings.tts_ttl_seconds / 4, 1.0), 300.0)
        while True:
            await anyio.sleep(period)
            services = runtime.services
            if services is not None and services.speech is not None:
                try:
                    await anyio.to_thread.run_sync(services.speech.store.sweep)
                except OSError:
                    log.exception("sweeping expired audio failed")

    async def purge_expired_conversations() -> None:
        if not settings.retention_days or settings.engines_only:
            return
        while True:
            services = runtime.services
            if services is not None and runtime.ready:
                cutoff = utcnow() - timedelta(days=settings.retention_days)
                try:
                    erased, files = await purge_expired(services, cutoff)
                    if erased.conversations:
                        log.info(
                            "retention purge",
                            extra={
                                "event": "retention",
                                "conversations": erased.conversations,
                                "messages": erased.messages,
                                "audio_files": files,
                            },
                        )
                except Exception:
                    log.exception("retention purge failed")
                await anyio.sleep(3600)
            else:
                await anyio.sleep(1)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            # Uploads a killed server left behind are deleted before serving; stale ones, periodically.
            await tasks.start(keep_temp_dir_clean, settings.data_dir / "tmp", settings.decode_timeout_seconds)
            tasks.start_soon(load)
            tasks.start_soon(sweep_expired_audio)
            tasks.start_soon(purge_expired_conversations)
            try:
                yield
            finally:
                startup.stop_waiting()  # a start-up still waiting (remote engine, database) ends now
                tasks.cancel_scope.cancel()
        startup.reset()  # start-up is over (this process's next waits may wait)
        if runtime.services is not None:
            if runtime.services.speech is not None:
                await runtime.services.speech.aclose()
            runtime.services.close()

    # The guard runs before any body is read: a caller without the key costs nothing.
    agent_api = Router(path="/api/external/agent", route_handlers=[chat, chat_stream, erase], guards=[require_api_key])
    # Multipart overhead on top of the recording itself; the file's own limit is checked too.
    voice_api = Router(
        path="/api/external/agent",
        route_handlers=[chat_voice, chat_voice_stream],
        guards=[require_api_key],
        request_max_body_size=settings.max_upload_bytes + 64 * 1024,
    )
    openai_api = openai_router(settings.max_upload_bytes)
    # The knowledge base's admin API: the same key, and for its writes the admin key when one
    # is set (LEA_ADMIN_API_KEY); a document plus the multipart overhead.
    knowledge_api = Router(
        path="/api/knowledge",
        route_handlers=knowledge_routes,
        guards=[require_api_key, require_admin_key_to_write],
        request_max_body_size=settings.knowledge_max_upload_bytes + 64 * 1024,
    )
    # An engine server (`serve --engines-only`) answers other replicas' engine requests: the
    # OpenAI-compatible API and health only, no conversation nor audio of its own.
    routes = (
        [openai_api, health, ready, metrics]
        if settings.engines_only
        else [agent_api, voice_api, openai_api, realtime, knowledge_api, agent_health, tts_audio, health, ready, metrics]
        # The browser console (static page) and its status panel's route.
        + [console_router(settings), console_status]
    )

    return Litestar(
        route_handlers=routes,
        lifespan=[lifespan],
        dependencies={"services": Provide(_services, sync_to_thread=False)},
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        middleware=[drain.answer_cut_off],
        state=State(
            {
                "api_keys": api_keys,
                "admin_keys": admin_keys,
                "settings": settings,
                "runtime": runtime,
                "metrics": app_metrics,
                "drain": drain,
            }
        ),
        cors_config=CORSConfig(
            allow_origins=settings.cors_origins,
            allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID", "Range"],
            # DELETE and PUT: the knowledge admin API (a document; the thesaurus)
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"],
            expose_headers=["X-Request-ID", "Retry-After", "Content-Range", "Accept-Ranges", "Content-Length"],
            max_age=600,
        )
        if settings.cors_origins
        else None,
        request_max_body_size=JSON_BODY_LIMIT,
        openapi_config=OpenAPIConfig(
            title="lea-local agent API",
            version=__version__,
            # Their scripts and styles from the package: a CDN is out of reach offline.
            render_plugins=openapi_render_plugins(),
            # Litestar's own /schema router, with the key check of LEA_METRICS_REQUIRE_KEY.
            openapi_router=Router(
                "/schema",
                route_handlers=[],
                include_in_schema=False,
                guards=[require_api_key_if_configured],
                middleware=[openapi_pages_middleware()],
            ),
        ),
        logging_config=None,  # lea_local.runtime.logs configures logging (JSON lines)
        debug=False,
    )


def create_asgi_app(settings: Settings) -> RequestLogMiddleware:
    """The app as served: every request, routed or not (404s too), gets a request id, a log
    line and its metrics."""
    app = create_app(settings)
    return RequestLogMiddleware(app, app.state.metrics)
