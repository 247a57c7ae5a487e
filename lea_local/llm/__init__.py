from lea_local.llm.base import ChatEngine, ChatMessage, ChatReply

__all__ = ["ChatEngine", "ChatMessage", "ChatReply"]
