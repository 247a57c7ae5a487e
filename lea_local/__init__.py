"""lea-local: a self-hosted, offline speech + LLM server for ImmoAssist's assistant Léa."""

__version__ = "0.1.0"
