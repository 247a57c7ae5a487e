"""Stopping llama.cpp inside a `llama_decode` call: a prompt of a few thousand tokens takes tens of
seconds to evaluate on a CPU, and a turn whose client left, whose time budget ran out or whose
server is stopping (SIGTERM) must give the engine back then, not after its first token.

llama.cpp polls an abort callback between the nodes of each graph it computes, from its compute
thread, hundreds of times per token. A Python callback there takes the GIL each time: measured with
SmolLM2-135M on 2 cores, it costs nothing while the process is idle (61 tokens/s), but with one
other thread running Python, generation fell to 0.5 tokens/s (8.5 without a callback). So the
callback is libc's `strlen`, given a two-byte buffer: it returns 0 ("go on") while the buffer holds
two NULs, and 1 ("abort") once its first byte is set, which a bool return reads as is. No Python
runs while llama.cpp computes (6.8 tokens/s in that test, 59 idle). A watcher thread sets the byte
when the turn's cancel event is set.

llama.h documents the abort as working "only with CPU execution": with layers offloaded to a GPU,
the graph already handed to it finishes first (a batch there is quick; the CPU is where prompts
take tens of seconds).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lea_local.runtime.cancellation import on_cancel

log = logging.getLogger(__name__)

WATCH_INTERVAL_SECONDS = 0.02
"""How often the watcher looks at the cancel event: the abort comes at most this late."""


class DecodeAbort:
    """The abort flag of one llama.cpp context. `watching(cancel)` raises it when `cancel` is set;
    `raised` then tells a failed decode (llama-cpp-python's RuntimeError) from a real failure."""

    def __init__(self, context: ctypes.c_void_p) -> None:
        import llama_cpp

        self._flag = ctypes.create_string_buffer(2)  # b"\0\0": strlen 0
        self._callback = None
        try:
            strlen = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
        except (OSError, AttributeError, TypeError) as exc:  # no C library to find (not Linux, macOS)
            log.warning("llama.cpp cannot abort a decode here (%s): a cancelled turn ends at its next token", exc)
            return
        # Built from the bare address: llama.cpp calls strlen directly, through no Python trampoline.
        self._callback = llama_cpp.ggml_abort_callback(strlen)
        llama_cpp.llama_set_abort_callback(context, self._callback, ctypes.cast(self._flag, ctypes.c_void_p))

    @property
    def raised(self) -> bool:
        return self._flag.raw[0] != 0

    @contextmanager
    def watching(self, cancel: threading.Event | None) -> Iterator[None]:
        """While inside, setting `cancel` makes the context's current and next decodes abort. The
        flag is lowered on the way out, when no decode can be running (the engine's lock is held)."""
        if self._callback is None:
            yield
            return
        try:
            with on_cancel(cancel, self._raise, WATCH_INTERVAL_SECONDS):
                yield
        finally:
            self._flag[0] = b"\x00"

    def _raise(self) -> None:
        self._flag[0] = b"\x01"
