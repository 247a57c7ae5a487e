"""Chat engine on llama-cpp-python: one `Llama` loaded at startup, chat template from the GGUF."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from lea_local.llm.abort import DecodeAbort
from lea_local.llm.base import ChatMessage, ChatReply, PromptRejected
from lea_local.llm.context import PromptTooLong
from lea_local.llm.prompt_cache import PromptCache
from lea_local.llm.repetition import RepetitionDetector
from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.cpu_share import CpuShare

log = logging.getLogger(__name__)

# Used only when a GGUF carries no chat template (rare for instruct models).
# llama.cpp reads this seed (LLAMA_DEFAULT_SEED) as "pick one at random": a caller's seed is
# mapped below it, so that every seed is reproducible.
_RANDOM_SEED = 0xFFFFFFFF

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_gpu_layers() -> int:
    """All layers when this llama-cpp-python build can offload to a GPU, else none."""
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


class LlamaCppChatEngine:
    provider = "llama-cpp"
    remote = False

    def __init__(
        self,
        model_path: Path,
        *,
        context_size: int = 4096,
        gpu_layers: int | None = None,
        threads: int | None = None,
        prompt_cache_bytes: int = 0,
        repeat_penalty: float = 1.1,
        cpu_share: CpuShare | None = None,
    ) -> None:
        """`threads`: llama.cpp's CPU threads (None: its default); with `cpu_share`, the most it
        uses, fewer while other processes keep CPUs busy (runtime/cpu_share.py)."""
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not model_path.is_file():
            raise FileNotFoundError(f"LLM model file not found: {model_path}")
        import llama_cpp

        self.gpu_layers = default_gpu_layers() if gpu_layers is None else gpu_layers
        self.repeat_penalty = repeat_penalty
        self.on_gpu = self.gpu_layers != 0 and llama_cpp.llama_supports_gpu_offload()
        self._llama = Llama(
            model_path=str(model_path),
            n_ctx=context_size,
            n_gpu_layers=self.gpu_layers,
            n_threads=threads,
            verbose=False,
        )
        self._abort = DecodeAbort(self._llama._ctx.ctx)
        self._cpu_share = cpu_share
        self._most_threads = self._llama.n_threads
        self.threads = self._most_threads
        self._prompt_cache: PromptCache | None = None
        if prompt_cache_bytes > 0:
            # Keeps the evaluated state of recent conversations: a conversation's next turn
            # evaluates only its new tokens even when other conversations ran in between.
            self._prompt_cache = PromptCache(prompt_cache_bytes)
            self._prompt_cache.attach(self._llama)
        trained = self._llama._model.n_ctx_train()
        if trained and context_size > trained:
            log.warning(
                "LLM context %d exceeds the %d tokens the model was trained on: answers may degrade",
                context_size,
                trained,
            )
        self.context_size = self._llama.n_ctx()
        self.model_name = model_path.name.removesuffix(".gguf")

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            log.warning("%s carries no chat template; using ChatML", model_path.name)
            template = CHATML_TEMPLATE
        model = self._llama._model
        self._eos_id = self._llama.token_eos()
        eos_text = model.token_get_text(self._eos_id) if self._eos_id != -1 else ""
        bos_id = self._llama.token_bos()
        bos_text = model.token_get_text(bos_id) if bos_id != -1 else ""
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=bos_text)
        self._stop = [eos_text] if eos_text else []
        # One Llama is not thread-safe: one generation at a time, for the whole generation.
        self._lock = threading.Lock()

    def _prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        import jinja2

        try:
            formatted = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        except (ValueError, jinja2.TemplateError) as exc:  # the template's raise_exception gives ValueError
            raise PromptRejected(f"the model's chat template refuses these messages: {exc}") from exc
        return self._llama.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)

    def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._prompt_tokens(messages))

    def reset_cache(self) -> None:
        """Forget every evaluated prompt (benchmarks of cold prompt evaluation)."""
        with self._lock:
            self._llama.reset()
            if self._prompt_cache is not None:
                self._prompt_cache.clear()

    def prompt_cache_stats(self) -> dict[str, int] | None:
        """The prompt cache's counters (`PromptCache.stats`), None when it is off."""
        return self._prompt_cache.stats() if self._prompt_cache is not None else None

    def close(self) -> None:
        """Nothing to release: the model lives as long as the process."""

    def _follow_cpu_share(self) -> None:
        """Set the thread count the machine leaves now (between two tokens: llama.cpp reads it
        at each decode)."""
        if self._cpu_share is None:
            return
        wanted = self._cpu_share.threads(self._most_threads)
        if wanted != self.threads:
            import llama_cpp

            llama_cpp.llama_set_n_threads(self._llama._ctx.ctx, wanted, wanted)
            log.debug("llm threads %d -> %d", self.threads, wanted)
            self.threads = wanted

    def count_text_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> ChatReply:
        prompt = self._prompt_tokens(messages)
        if len(prompt) >= self.context_size:  # not even one token of reply would fit
            raise PromptTooLong(len(prompt), self.context_size - 1)
        max_tokens = max(1, min(max_tokens, self.context_size - len(prompt)))
        sampling = {} if top_p is None else {"top_p": top_p}  # else llama.cpp's default
        repetition = RepetitionDetector()
        finish_reason = "stop"
        with self._lock:
            self._follow_cpu_share()
            stream = self._llama.create_completion(
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                repeat_penalty=self.repeat_penalty,
                stop=[*self._stop, *stop],
                seed=None if seed is None else seed % _RANDOM_SEED,
                stream=True,
                **sampling,
            )
            # Closing the stream stops llama.cpp at once when we leave early (after the abort
            # flag is lowered).
            with contextlib.closing(stream), self._abort.watching(cancel):
                try:
                    for chunk in stream:
                        if cancel is not None and cancel.is_set():
                            raise GenerationCancelled(
                                "generation cancelled", completion_tokens=self.count_text_tokens(repetition.text)
                            )
                        self._follow_cpu_share()
                        choice = chunk["choices"][0]
                        if choice["text"]:
                            if repetition.feed(choice["text"]):
                                # A loop: the rest would only repeat it, so it is never generated.
                                log.info("llm.loop_stopped", extra={"event": "llm.loop_stopped"})
                                break
                            if on_text is not None:
                                on_text(choice["text"])
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                except RuntimeError as exc:  # llama-cpp-python's "llama_decode returned 2"
                    if not self._abort.raised:
                        raise
                    # `cancel` was set while llama.cpp computed (a long prompt's evaluation).
                    raise GenerationCancelled(
                        "generation cancelled during evaluation",
                        completion_tokens=self.count_text_tokens(repetition.text),
                    ) from exc
        generated = repetition.text
        return ChatReply(
            text=repetition.kept_text(),
            prompt_tokens=len(prompt),
            completion_tokens=self.count_text_tokens(generated),
            finish_reason="length" if finish_reason == "length" and not repetition.fired else "stop",
        )
