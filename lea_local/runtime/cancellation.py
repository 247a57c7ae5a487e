"""A request's work ending early: the exception every engine and queue raises when its caller gave
up, and the watcher that stops a blocking call which cannot look at a cancel event itself.

Neutral ground: the queues, the remote engines' HTTP plumbing and every engine raise and catch
`GenerationCancelled`, so it lives below all of them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class GenerationCancelled(Exception):
    """The caller gave up (client gone, timeout): generation stopped early, after
    `completion_tokens` tokens (None when no generation had started)."""

    def __init__(self, message: str, *, completion_tokens: int | None = None) -> None:
        super().__init__(message)
        self.completion_tokens = completion_tokens


@contextmanager
def on_cancel(cancel: threading.Event | None, action: Callable[[], None], poll_seconds: float) -> Iterator[None]:
    """While inside, `action()` runs once, from a watcher thread, within `poll_seconds` of `cancel`
    being set: what stops a blocking call that cannot look at `cancel` itself (a socket read,
    llama.cpp's decode). Never after the block is left; leaving does not wait for the watcher.
    Without a `cancel` (work nothing can end), nothing is watched."""
    if cancel is None:
        yield
        return
    done = False
    lock = threading.Lock()

    def watch() -> None:
        while not done:
            if cancel.wait(poll_seconds):
                with lock:
                    if not done:
                        action()
                return

    threading.Thread(target=watch, name="cancel-watch", daemon=True).start()
    try:
        yield
    finally:
        with lock:
            done = True
