"""schemathesis against the app's own OpenAPI schema, on the real server and models: no 5xx, no
response that breaks the schema (bodies, status codes, content types)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import API_KEY, LeaServer

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path, models_dir):
    # /v1 takes the reply length from the request: the server's ceiling keeps a fuzzed one short.
    lea = LeaServer(
        tmp_path / "data", models_dir, {"LEA_LLM_MAX_REPLY_TOKENS": "8", "LEA_LLM_MAX_COMPLETION_TOKENS": "16"}
    )
    lea.start()
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    try:
        result = subprocess.run(
            [cli, "run", f"{lea.url}/schema/openapi.json", "--checks", CHECKS, "--header", f"X-API-Key: {API_KEY}",
             "--max-examples", "25", "--request-timeout", "120", "--generation-deterministic", "--no-color"],
            capture_output=True, text=True, timeout=1200, cwd=tmp_path,  # its cache stays out of the repo
        )  # fmt: skip
    finally:
        lea.stop()
    print(result.stdout[-2500:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    served = [e for e in lea.log_events() if e.get("event") == "request" and e["route"] != "/ready"]
    assert len(served) > 100
    assert [e for e in served if e["status"] >= 500] == []
