"""The agency's own documents, searched in French to ground Léa's answers (see library.py).

What the routes use is exported here; the modules behind it are the package's own."""

from lea_local.knowledge.extract import DocumentRejected
from lea_local.knowledge.french import MAX_RULE_ENTRIES, AgencyThesaurus, Thesaurus, lines_too_long
from lea_local.knowledge.library import Document, DocumentNotFound, KnowledgeBase, Passage, ReindexReport

__all__ = [
    "MAX_RULE_ENTRIES",
    "AgencyThesaurus",
    "Document",
    "DocumentNotFound",
    "DocumentRejected",
    "KnowledgeBase",
    "Passage",
    "ReindexReport",
    "Thesaurus",
    "lines_too_long",
]
