"""The browser console and the OpenAPI pages, offline.

/console serves the static page shipped in `lea_local/console/` (plain HTML, CSS and JavaScript
modules: no build step). The OpenAPI pages (/schema/redoc, /swagger, /rapidoc, /elements) load
their scripts and styles from `lea_local/console/vendor/`, not from a CDN. GET /api/console/status
(key required) gives the console's status panel what /api/external/health does not: the queues
and where each engine computes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar import Request, Router, get
from litestar.datastructures import CacheControlHeader, State
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RapidocRenderPlugin,
    RedocRenderPlugin,
    StoplightRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from lea_local import __version__
from lea_local.api.auth import require_api_key
from lea_local.api.openapi import error_responses
from lea_local.asr.base import SpeechRecognizer
from lea_local.llm.base import ChatEngine
from lea_local.settings import Settings
from lea_local.tts.base import SpeechSynthesizer

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CONSOLE_PATH = "/console"
VENDOR = f"{CONSOLE_PATH}/vendor"
FAVICON = f"<link rel='icon' type='image/svg+xml' href='{CONSOLE_PATH}/favicon.svg'>"


# --- the static page ------------------------------------------------------------------------------


def content_security_policy(settings: Settings) -> str:
    """Only this origin: no CDN, no inline script; the answers' audio may come from the public
    base URL (LEA_PUBLIC_BASE_URL) and, once recorded, from a blob."""
    media = ["'self'", "blob:"]
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        media.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"media-src {' '.join(media)}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _adding_headers(headers: list[tuple[bytes, bytes]]) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware that adds fixed headers to every response (static files have no hook for it)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def with_headers(scope: Scope, receive: Receive, send: Send) -> None:
            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), *headers]  # type: ignore[typeddict-unknown-key]
                await send(message)

            await app(scope, receive, send_with_headers)

        return with_headers

    return middleware


def console_router(settings: Settings) -> Router:
    """/console (index.html) and its files, vendored OpenAPI assets included. Open without the
    key: the page holds no data; every API call it makes sends the key the user types."""
    headers = [
        (b"content-security-policy", content_security_policy(settings).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    return create_static_files_router(
        CONSOLE_PATH,
        directories=[CONSOLE_DIR],
        html_mode=True,
        name="console",
        # Revalidated at each load: an upgraded server serves its own page at once.
        cache_control=CacheControlHeader(no_cache=True),
        middleware=[_adding_headers(headers)],
        include_in_schema=False,
    )


# --- the OpenAPI pages ----------------------------------------------------------------------------


# The pages' own inline scripts and workers stay allowed; any other origin is refused, so that a
# page never calls out (Redoc's footer shows its logo from cdn.redoc.ly, and hides it when refused).
OPENAPI_PAGES_POLICY = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; frame-ancestors 'none'"


def openapi_pages_middleware() -> Callable[[ASGIApp], ASGIApp]:
    """For the /schema router: this origin only."""
    return _adding_headers(
        [(b"content-security-policy", OPENAPI_PAGES_POLICY.encode()), (b"x-content-type-options", b"nosniff")]
    )


class OfflineRapidocRenderPlugin(RapidocRenderPlugin):
    """RapiDoc fetches its Open Sans web fonts from fonts.gstatic.com unless told not to."""

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, openapi_schema).replace(b"<rapi-doc ", b'<rapi-doc load-fonts="false" ', 1)


def openapi_render_plugins() -> list[OpenAPIRenderPlugin]:
    """The pages Litestar served by default (Redoc at /schema), with the package's copies of their
    assets (see lea_local/console/vendor/README.md) and no Google fonts."""
    return [
        RedocRenderPlugin(js_url=f"{VENDOR}/redoc/redoc.standalone.js", google_fonts=False, favicon=FAVICON),
        SwaggerRenderPlugin(
            js_url=f"{VENDOR}/swagger-ui/swagger-ui-bundle.js",
            css_url=f"{VENDOR}/swagger-ui/swagger-ui.css",
            standalone_preset_js_url=f"{VENDOR}/swagger-ui/swagger-ui-standalone-preset.js",
            favicon=FAVICON,
        ),
        OfflineRapidocRenderPlugin(js_url=f"{VENDOR}/rapidoc/rapidoc-min.js", favicon=FAVICON),
        StoplightRenderPlugin(
            js_url=f"{VENDOR}/elements/web-components.min.js",
            css_url=f"{VENDOR}/elements/styles.min.css",
            favicon=FAVICON,
        ),
        JsonRenderPlugin(),
        YamlRenderPlugin(),
    ]


# --- the status panel -----------------------------------------------------------------------------


class QueueStatus(msgspec.Struct):
    name: str
    stage: str
    """decode, asr, llm or tts: the names of the Server-Timing metrics."""
    running: int
    waiting: int
    max_waiting: int


class ConsoleStatus(msgspec.Struct):
    success: bool
    ready: bool
    """False while the models load (the other API routes answer 503 meanwhile)."""
    version: str
    locale: str
    models: dict[str, str]
    devices: dict[str, str]
    """Per engine (llm, asr, tts): `gpu`, `cpu` or `remote` (another server computes)."""
    queues: list[QueueStatus]


def _device(engine: ChatEngine | SpeechRecognizer | SpeechSynthesizer) -> str:
    if engine.remote:
        return "remote"
    return "gpu" if engine.on_gpu else "cpu"


@get(
    "/api/console/status",
    summary="The console's status panel: readiness, models, locale, engine devices, queue depths (key required)",
    sync_to_thread=False,
    guards=[require_api_key],
    responses=error_responses(401),
)
def console_status(state: State) -> ConsoleStatus:
    runtime, settings = state.runtime, state.settings
    services = runtime.services if runtime.ready else None
    if services is None:
        return ConsoleStatus(
            success=True, ready=False, version=__version__, locale=settings.locale, models={}, devices={}, queues=[]
        )
    devices = {"llm": _device(services.chat_engine)}
    if services.recognizer is not None:
        devices["asr"] = _device(services.recognizer)
    if services.speech is not None:
        devices["tts"] = _device(services.speech.synthesizer)
    return ConsoleStatus(
        success=True,
        ready=True,
        version=__version__,
        locale=settings.locale,
        models=services.model_names(),
        devices=devices,
        queues=[
            QueueStatus(
                name=queue.name,
                stage=queue.stage,
                running=queue.running,
                waiting=queue.waiting,
                max_waiting=queue.max_waiting,
            )
            for queue in services.queues()
        ],
    )
