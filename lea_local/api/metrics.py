"""GET /metrics: Prometheus text format (prometheus_client)."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lea_local.api.auth import require_api_key_if_configured


@get(
    "/metrics",
    summary="Prometheus metrics",
    sync_to_thread=False,
    media_type=CONTENT_TYPE_LATEST,
    guards=[require_api_key_if_configured],  # open unless LEA_METRICS_REQUIRE_KEY
)
def metrics(state: State) -> Response[bytes]:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
