"""The agency's own documents, searched in French to ground Léa's answers (see library.py).

What the routes use is exported here; the modules behind it are the package's own."""

from lea_local.knowledge.extract import DocumentRejected
from lea_local.knowledge.french import AgencyThesaurus, Thesaurus
from lea_local.knowledge.library import Document, DocumentNotFound, KnowledgeBase, Passage, ReindexReport

__all__ = [
    "AgencyThesaurus",
    "Document",
    "DocumentNotFound",
    "DocumentRejected",
    "KnowledgeBase",
    "Passage",
    "ReindexReport",
    "Thesaurus",
]
