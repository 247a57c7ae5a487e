from lea_local.llm.base import ChatEngine, ChatMessage, ChatReply, GenerationCancelled

__all__ = ["ChatEngine", "ChatMessage", "ChatReply", "GenerationCancelled"]
