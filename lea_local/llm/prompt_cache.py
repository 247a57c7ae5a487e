"""The LLM's prompt cache: the evaluated state (KV cache) of recent conversations, in RAM, bounded
by the bytes it really holds.

Why not llama-cpp-python's `LlamaRAMCache` (0.3.36): it counts only each state's KV bytes, but
`Llama.save_state` also copies the logits array (n_batch × vocabulary × 4 bytes: 100 MB for
SmolLM2's 49k vocabulary, 263 MB for a 128k one) into every saved state, so a 1 GB cache grew to
11 GB. With `logits_all=False` (our engine) llama-cpp-python never writes that array (sampling reads
the context's own logits, and a restored state is always decoded again before sampling), so this
cache keeps no logits at all. Each state lives in an anonymous `mmap` of its own: evicting it gives
the pages back to the kernel at once, instead of leaving holes in glibc's heap that resident memory
never loses. The cache evicts before it copies a new state, so it never holds more than its capacity.

`PromptCache.attach(llama)` replaces `save_state`/`load_state` on that one `Llama` instance with
ones that copy the state straight into (and out of) the mapping, and sets the cache.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from llama_cpp import llama_cpp as llama_c
from llama_cpp.llama import LlamaState
from llama_cpp.llama_cache import BaseLlamaCache

if TYPE_CHECKING:
    from llama_cpp import Llama

# Python objects around each entry (entry, LlamaState, dict node, array and mmap headers),
# rounded up from sys.getsizeof on CPython 3.11.
ENTRY_OVERHEAD_BYTES = 2048
# A new state supersedes a stored one whose key it extends, give or take this many tokens at the
# end: the next turn's prompt re-tokenises the reply and closes it with the template's end-of-turn.
SUPERSEDED_TAIL_TOKENS = 16
# A restore copies the whole state back: worth it only when it spares evaluating more than a few
# tokens (a stored conversation that merely starts with the same word as the prompt is no hit).
MIN_RESTORE_GAIN_TOKENS = 16


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two token arrays."""
    n = min(len(a), len(b))
    mismatches = np.flatnonzero(a[:n] != b[:n])
    return int(mismatches[0]) if mismatches.size else n


def _page_rounded(size: int) -> int:
    return -(-size // mmap.PAGESIZE) * mmap.PAGESIZE


@dataclass
class _Entry:
    key: np.ndarray
    state: LlamaState
    nbytes: int


class _CompactState(LlamaState):
    """A saved state without logits, its KV bytes in an anonymous mapping (None: it would not fit)."""

    kv: mmap.mmap | None


class PromptCache(BaseLlamaCache):
    """LRU by bytes over saved `Llama` states. `hits`: lookups that restored a stored conversation
    (it shares at least MIN_RESTORE_GAIN_TOKENS more of the prompt than the live context);
    `misses`: the others.
    `reused_tokens` / `looked_up_tokens`: prompt tokens not evaluated again, from a restored state or
    the live context, over all prompt tokens looked up."""

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_id = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self._llama: Llama | None = None
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.reused_tokens = 0
        self.looked_up_tokens = 0

    # --- wiring -------------------------------------------------------------------------------

    def attach(self, llama: Llama) -> None:
        if llama._logits_all:
            raise ValueError("PromptCache keeps no logits: it cannot serve a Llama made with logits_all=True")
        self._llama = llama
        # Instance attributes: create_completion calls self.save_state()/self.load_state().
        llama.save_state = self._save_state  # type: ignore[method-assign]
        llama.load_state = self._load_state  # type: ignore[method-assign]
        llama.set_cache(self)

    def _save_state(self) -> LlamaState:
        llama = self._require_llama()
        ctx = llama._ctx.ctx
        n = llama.n_tokens
        size = int(llama_c.llama_state_get_size(ctx))
        input_ids = llama.input_ids[:n].copy()
        needed = _page_rounded(size) + 2 * input_ids.nbytes + ENTRY_OVERHEAD_BYTES
        kv: mmap.mmap | None = None
        if 0 < size and needed <= self.capacity_bytes:
            with self._lock:
                self._drop_superseded(input_ids)
                self._evict_until_free(needed)
            kv = mmap.mmap(-1, size)
            view = (ctypes.c_uint8 * size).from_buffer(kv)
            try:
                written = int(llama_c.llama_state_get_data(ctx, view, size))
            finally:
                del view  # an exported buffer keeps the mapping from being closed
            if written > size:
                kv.close()
                raise RuntimeError(f"llama_state_get_data wrote {written} bytes into {size}")
            size = written
        state = _CompactState(
            input_ids=input_ids,
            scores=np.empty((0, llama.n_vocab()), dtype=np.single),
            n_tokens=n,
            llama_state=b"",
            llama_state_size=size,
            seed=llama._seed,
        )
        state.kv = kv
        return state

    def _load_state(self, state: LlamaState) -> None:
        llama = self._require_llama()
        kv = getattr(state, "kv", None)
        if kv is None or kv.closed:
            raise RuntimeError("PromptCache can restore only the states it saved")
        n = state.n_tokens
        llama.input_ids[:n] = state.input_ids[:n]
        llama.n_tokens = n
        llama._requires_eval = True  # the next prompt token is decoded again before sampling
        llama._seed = state.seed
        size = state.llama_state_size
        view = (ctypes.c_uint8 * size).from_buffer(kv)
        try:
            read = int(llama_c.llama_state_set_data(llama._ctx.ctx, view, size))
        finally:
            del view
        if read != size:
            raise RuntimeError(f"llama_state_set_data read {read} bytes, expected {size}")

    def _require_llama(self) -> Llama:
        if self._llama is None:
            raise RuntimeError("PromptCache.attach(llama) first")
        return self._llama

    # --- the cache protocol create_completion uses ----------------------------------------------

    @property
    def cache_size(self) -> int:
        return self._bytes

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        """The stored state sharing the longest prefix with `key`, only when restoring it spares
        more evaluation than the live context already does (else KeyError, counted as a miss)."""
        prompt = np.asarray(key, dtype=np.intc)
        llama = self._require_llama()
        live = common_prefix(llama.input_ids[: llama.n_tokens], prompt)
        with self._lock:
            self.looked_up_tokens += len(prompt)
            best_id, best = None, 0
            for entry_id, entry in self._entries.items():
                shared = common_prefix(entry.state.input_ids, prompt)
                if shared > best:
                    best_id, best = entry_id, shared
            if best_id is None or best < live + MIN_RESTORE_GAIN_TOKENS:
                self.misses += 1
                self.reused_tokens += live
                raise KeyError("no stored state beats the live context")
            self.hits += 1
            self.reused_tokens += best
            self._entries.move_to_end(best_id)
            return self._entries[best_id].state

    def __contains__(self, key: Sequence[int]) -> bool:
        prompt = np.asarray(key, dtype=np.intc)
        with self._lock:
            return any(common_prefix(e.state.input_ids, prompt) > 0 for e in self._entries.values())

    def __setitem__(self, key: Sequence[int], state: LlamaState) -> None:
        kv = getattr(state, "kv", None)
        if kv is None:  # did not fit in the capacity (or not one of ours): not kept
            return
        tokens = np.asarray(key, dtype=np.intc)
        nbytes = len(kv) + tokens.nbytes + state.input_ids.nbytes + state.scores.nbytes + ENTRY_OVERHEAD_BYTES
        nbytes = _page_rounded(len(kv)) + nbytes - len(kv)
        with self._lock:
            self._drop_superseded(tokens)
            self._evict_until_free(nbytes)
            self._entries[self._next_id] = _Entry(tokens, state, nbytes)
            self._next_id += 1
            self._bytes += nbytes

    # --- housekeeping ---------------------------------------------------------------------------

    def _drop_superseded(self, tokens: np.ndarray) -> None:
        """Older turns of the conversation `tokens` continues: the new state serves whatever they would."""
        for entry_id, entry in list(self._entries.items()):
            if len(entry.key) <= len(tokens) + SUPERSEDED_TAIL_TOKENS and (
                common_prefix(entry.key, tokens) >= len(entry.key) - SUPERSEDED_TAIL_TOKENS
            ):
                self._drop(entry_id)

    def _evict_until_free(self, nbytes: int) -> None:
        while self._entries and self._bytes + nbytes > self.capacity_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    def _drop(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        self._bytes -= entry.nbytes
        kv = getattr(entry.state, "kv", None)
        if kv is not None:
            kv.close()  # munmap now: the pages go back to the kernel

    def clear(self) -> None:
        with self._lock:
            for entry_id in list(self._entries):
                self._drop(entry_id)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "bytes": self._bytes,
                "entries": len(self._entries),
                "capacity_bytes": self.capacity_bytes,
                "evictions": self.evictions,
                "reused_tokens": self.reused_tokens,
                "looked_up_tokens": self.looked_up_tokens,
            }

    def __repr__(self) -> str:
        s = self.stats()
        return f"PromptCache({s['entries']} entries, {s['bytes']} / {s['capacity_bytes']} bytes)"
