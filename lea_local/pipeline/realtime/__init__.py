"""OpenAI's Realtime protocol on lea-local's engines: a session's state machine (`session`), its
configuration and conversation in both dialects (`config`, `items`), its audio on the wire
(`audio`). The websocket itself is `lea_local.api.realtime`'s."""

from lea_local.pipeline.realtime.session import RealtimeEngines, RealtimeLimits, RealtimeSession, SessionEnded

__all__ = ["RealtimeEngines", "RealtimeLimits", "RealtimeSession", "SessionEnded"]
