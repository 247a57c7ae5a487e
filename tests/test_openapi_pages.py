"""The OpenAPI pages (/schema and its siblings) render offline in a real Chromium: their scripts,
styles and fonts come from the package (lea_local/console/vendor), never from a CDN; every
request the browser makes stays on 127.0.0.1, and the console links to each page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.browser import Browser, browser
from tests.server import LeaServer
from tests.waiting import wait_for

TITLE = "lea-local agent API"
OPERATION = "Text chat with Léa"  # the summary of POST /api/external/agent/chat
PAGES = ["/schema", "/schema/swagger", "/schema/redoc", "/schema/rapidoc", "/schema/elements"]
VENDOR = Path(__file__).resolve().parent.parent / "lea_local" / "console" / "vendor"

# The page's text, RapiDoc's shadow DOM included.
PAGE_TEXT = """
const rapidoc = document.querySelector("rapi-doc");
return document.body.innerText + " " + (rapidoc && rapidoc.shadowRoot ? rapidoc.shadowRoot.textContent : "");
"""


def failures(b: Browser) -> list[str]:
    """Requests that failed and script errors so far: a page that has any will not render."""
    failed = []
    for entry in b.driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            b.requested.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.loadingFailed" and message["params"].get("type") != "Other":
            failed.append(f"request failed: {message['params'].get('errorText')}")
        elif message["method"] == "Network.responseReceived" and message["params"]["response"]["status"] >= 400:
            failed.append(f"{message['params']['response']['status']} {message['params']['response']['url']}")
    errors = [m["message"] for m in b.driver.get_log("browser") if m["level"] == "SEVERE"]
    b.console_messages += errors
    return failed + errors


@pytest.mark.browser
@pytest.mark.parametrize("path", PAGES)
def test_openapi_page_renders_with_no_outside_request(server: LeaServer, path: str) -> None:
    with browser(width=1280) as b:
        b.open(server.url + path)
        seen: list[str] = []

        def rendered() -> bool:
            text = str(b.js(PAGE_TEXT))
            return TITLE in text and OPERATION in text

        def can_still_render() -> bool:
            seen.extend(failures(b))
            return not seen

        wait_for(rendered, f"{path} shows the API", while_possible=can_still_render)
        assert seen == [], seen
        b.screenshot("openapi" + path.replace("/", "-"))
        assert b.outside_requests(server.url) == []
        assert any("/console/vendor/" in url for url in b.requested)


def test_pages_name_no_cdn_and_the_assets_are_packaged(server: LeaServer) -> None:
    with server.client() as client:
        for path in PAGES:
            html = client.get(path).text
            for outside in ("cdn.jsdelivr.net", "unpkg.com", "cdn.redoc.ly", "fonts.googleapis.com"):
                assert outside not in html, (path, outside)
            assets = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
            assert assets and all(asset.startswith("/console/") for asset in assets), (path, assets)
            for asset in assets:
                assert client.get(asset).status_code == 200, (path, asset)
        console = client.get("/console").text
        for path in PAGES[1:]:
            assert f'href="{path}"' in console
    notice = (VENDOR / "README.md").read_text(encoding="utf-8")
    for name in ("swagger-ui-dist", "redoc", "rapidoc", "@stoplight/elements"):
        assert name in notice
