"""The agency's own documents, searched in French to ground Léa's answers (see library.py)."""

from lea_local.knowledge.extract import DocumentRejected
from lea_local.knowledge.library import Document, DocumentNotFound, KnowledgeBase, Passage, ReindexReport

__all__ = ["Document", "DocumentNotFound", "DocumentRejected", "KnowledgeBase", "Passage", "ReindexReport"]
