"""/metrics and the OpenAPI pages (/schema…): open by default, behind the API key (the same
guard as the agent API, X-API-Key or Bearer) with LEA_METRICS_REQUIRE_KEY."""

from __future__ import annotations

import pytest

from tests.server import API_KEY

PAGES = ("/metrics", "/schema", "/schema/openapi.json")


def test_metrics_and_schema_are_open_by_default(server):
    with server.client() as client:
        for path in PAGES:
            assert client.get(path).status_code == 200, path


@pytest.mark.slow
def test_metrics_and_schema_need_the_key_when_configured(make_server):
    lea = make_server({"LEA_METRICS_REQUIRE_KEY": "true"})
    with lea.client() as client:
        for path in (*PAGES, "/schema/no-such-page"):
            for headers in ({}, {"X-API-Key": API_KEY + "0"}, {"Authorization": "Bearer " + API_KEY[:-1]}):
                r = client.get(path, headers=headers)
                assert r.status_code == 401, (path, headers, r.status_code)
                assert r.json()["success"] is False
        for path in PAGES:
            assert client.get(path, headers={"X-API-Key": API_KEY}).status_code == 200, path
            assert client.get(path, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200, path
        metrics = client.get("/metrics", headers={"X-API-Key": API_KEY}).text
        # The refused requests were counted, under their route templates.
        assert 'method="GET",route="/metrics",status="401"' in metrics
        # Health checks stay open for the supervisor.
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
