"""GET /metrics: Prometheus text format (prometheus_client)."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


@get("/metrics", summary="Prometheus metrics", sync_to_thread=False, media_type=CONTENT_TYPE_LATEST)
def metrics(state: State) -> Response[bytes]:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
