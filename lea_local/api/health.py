"""Liveness and readiness (no key), and ImmoAssist's health check (with the key). All answer
while a model is generating."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State

from lea_local.api.auth import require_api_key
from lea_local.api.errors import still_starting
from lea_local.api.openapi import error_responses
from lea_local.api.schemas import AgentHealthResponse, HealthResponse, ReadyResponse


@get("/health", summary="Liveness: the process answers", sync_to_thread=False)
def health() -> HealthResponse:
    return HealthResponse(status="ok")


@get(
    "/ready",
    summary="Readiness: every model loaded and warmed up",
    sync_to_thread=False,
    responses=error_responses(503),
)
def ready(state: State) -> ReadyResponse:
    runtime = state.runtime
    if not runtime.ready or runtime.services is None:
        raise still_starting()
    return ReadyResponse(status="ready", models=runtime.services.model_names())


@get(
    ["/api/external/health", "/api/external/agent/health"],
    summary="ImmoAssist's capability check: the agent answers and its models are ready (key required)",
    sync_to_thread=False,
    guards=[require_api_key],
    responses=error_responses(401, 503),
)
def agent_health(state: State) -> AgentHealthResponse:
    runtime = state.runtime
    if not runtime.ready or runtime.services is None:
        raise still_starting()
    return AgentHealthResponse(
        success=True,
        status="ok",
        ready=True,
        models=runtime.services.model_names(),
        locale=runtime.services.settings.locale,
    )
