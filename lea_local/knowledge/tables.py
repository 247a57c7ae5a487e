"""The knowledge base's tables, in the conversation store's database (created by the Alembic
revisions 0003_knowledge, 0005_knowledge_vectors and 0006_knowledge_directory). The search structures beside them belong to
the index (index.py)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()

documents = Table(
    "knowledge_documents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("file_name", String(255), nullable=False, unique=True),
    Column("title", Text, nullable=False),
    Column("format", String(16), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("passages", Integer, nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

passages = Table(
    "knowledge_passages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("document_id", Integer, ForeignKey("knowledge_documents.id", ondelete="CASCADE"), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("section", Text, nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_knowledge_passages_document", "document_id", "ordinal"),
)

vectors = Table(
    "knowledge_vectors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("passage_id", Integer, ForeignKey("knowledge_passages.id", ondelete="CASCADE"), nullable=False),
    Column("encoder", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Index("ix_knowledge_vectors_passage", "passage_id", "encoder", "position"),
)
"""A passage's sentence-encoder vectors (dense.py): position 0 the whole, then its windows;
float16, little-endian. `encoder` names the vector space (encoder.py)."""

directory = Table(
    "knowledge_directory",
    metadata,
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("directory_id", String(36), nullable=False),
    Column("first_path", Text, nullable=False),
    Column("first_host", String(255), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
)
"""One row (slot 1): the id of the knowledge directory whose files the documents are
(directory.py), and where it was first seen, for the message that refuses another one."""
