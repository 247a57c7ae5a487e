"""The OpenAI-compatible API under /v1 (chat completions, transcriptions, speech, models), on
the same engines, queues, deadlines and keys as the agent API. An OpenAI SDK pointed at
`http://<host>:8000/v1` with a lea-local key (`OPENAI_BASE_URL`, `OPENAI_API_KEY`) runs
unchanged: ImmoAssist's "integrated" mode among them."""

from __future__ import annotations

from litestar import Router

from lea_local.api.auth import require_api_key
from lea_local.api.openai.chat import chat_completions
from lea_local.api.openai.models import list_models, retrieve_model
from lea_local.api.openai.speech import list_voices, speech
from lea_local.api.openai.transcriptions import transcriptions


def openai_router(max_upload_bytes: int) -> Router:
    # A recording may be as large as the voice endpoint takes, plus multipart overhead; the
    # JSON routes keep the app's limit.
    uploads = Router(path="/", route_handlers=[transcriptions], request_max_body_size=max_upload_bytes + 64 * 1024)
    # The guard runs before any body is read: a caller without the key costs nothing.
    return Router(
        path="/v1",
        route_handlers=[list_models, retrieve_model, chat_completions, uploads, speech, list_voices],
        guards=[require_api_key],
    )
