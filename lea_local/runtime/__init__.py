"""Runtime plumbing shared by the engines and the routes: inference queues and admission,
cancellation, the remote engines' HTTP client, metrics and request ids, JSON logs, and what the
machine offers (GPU, cores)."""
