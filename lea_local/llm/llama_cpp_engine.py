"""Chat engine on llama-cpp-python: one `Llama` loaded at startup, chat template from the GGUF.

Tool calls and JSON output (`_generate_structured`) are sampled under a llama.cpp grammar built
from their schemas (`grammar.py`), in the model family's own call syntax (`tool_formats.py`).
With `tool_choice: "auto"` the grammar is lazy, in two phases, as llama.cpp's server does with
its trigger words: the model writes freely until it writes its family's call opener (a text such
as `<tool_call>`, or a control token such as Mistral's `[TOOL_CALLS]`); the free phase stops
there, and generation resumes from the same tokens (the KV cache keeps them: nothing is
evaluated twice) under the grammar of the calls. `required` and a named function skip the free
phase: the opener is put in the prompt and the call is constrained from its first token."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from lea_local.llm import grammar_sampler
from lea_local.llm.abort import DecodeAbort
from lea_local.llm.base import (
    ChatMessage,
    ChatReply,
    FeatureRefused,
    JsonOutput,
    PromptRejected,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    ToolUse,
)
from lea_local.llm.grammar import GrammarBuilder, SchemaRefused, json_grammar
from lea_local.llm.context import PromptTooLong
from lea_local.llm.prompt_cache import PromptCache
from lea_local.llm.repetition import RepetitionDetector
from lea_local.llm.tool_formats import (
    CallScanner,
    ToolFormat,
    TriggerWatch,
    format_of,
    openai_tools,
    template_messages,
)
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
        # Grammars (tool calls, JSON output) checked token first, as llama.cpp's server does.
        grammar_sampler.install(self._llama)
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
        self.tool_format: ToolFormat = format_of(template)
        """How this model sees tools and writes its calls (`tool_formats.py`)."""
        self._stop = [eos_text] if eos_text else []
        # One Llama is not thread-safe: one generation at a time, for the whole generation.
        self._lock = threading.Lock()

    def _prompt_tokens(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] | None = None) -> list[int]:
        import jinja2

        fmt = self.tool_format
        try:
            formatted = self._formatter(
                messages=template_messages(messages, fmt, tools),  # type: ignore[arg-type]
                tools=openai_tools(tools) if tools and fmt.template_knows_tools else None,  # type: ignore[arg-type]
            )
        except (ValueError, TypeError, jinja2.TemplateError) as exc:  # raise_exception gives ValueError
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
        tools: ToolUse | None = None,
        json_output: JsonOutput | None = None,
        on_tool_call: Callable[[ToolCallDelta], None] | None = None,
    ) -> ChatReply:
        if tools is not None or json_output is not None:
            return self._generate_structured(
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                on_text=on_text,
                cancel=cancel,
                top_p=top_p,
                stop=stop,
                seed=seed,
                tools=tools,
                json_output=json_output,
                on_tool_call=on_tool_call,
            )
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

    # --- tool calls and JSON output -------------------------------------------------------------
    def build_grammar(self, tools: ToolUse | None, json_output: JsonOutput | None) -> str:
        """The GBNF of a request's constrained part (calls, or the JSON reply), checked by
        llama.cpp's own parser. Raises SchemaRefused."""
        try:
            if json_output is not None:
                gbnf = json_grammar(json_output.schema)
            else:
                assert tools is not None
                wanted = [t for t in tools.tools if tools.mode != "named" or t.name == tools.name]
                builder = GrammarBuilder()
                parallel = tools.parallel and tools.mode != "named"
                gbnf = builder.grammar(self.tool_format.body_rule(builder, wanted, parallel))
            self._check_grammar(gbnf)
        except SchemaRefused as exc:
            raise FeatureRefused(str(exc), "response_format" if json_output is not None else "tools") from exc
        return gbnf

    def _check_grammar(self, gbnf: str) -> None:
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._llama._model.vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise SchemaRefused("llama.cpp cannot parse the grammar built from this schema")
        llama_cpp.llama_sampler_free(sampler)

    def _generate_structured(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        on_text: Callable[[str], None] | None,
        cancel: threading.Event | None,
        top_p: float | None,
        stop: Sequence[str],
        seed: int | None,
        tools: ToolUse | None,
        json_output: JsonOutput | None,
        on_tool_call: Callable[[ToolCallDelta], None] | None,
    ) -> ChatReply:
        from llama_cpp import LlamaGrammar

        fmt = self.tool_format
        prompt = self._prompt_tokens(messages, tools.tools if tools is not None else None)
        if len(prompt) >= self.context_size:
            raise PromptTooLong(len(prompt), self.context_size - 1)
        budget = max(1, min(max_tokens, self.context_size - len(prompt)))
        grammar = LlamaGrammar.from_string(self.build_grammar(tools, json_output), verbose=False)
        seed = None if seed is None else seed % _RANDOM_SEED
        sampling = {"temperature": temperature, "seed": seed, **({} if top_p is None else {"top_p": top_p})}
        with self._lock, self._abort.watching(cancel):
            if json_output is not None:
                text, finish, used = self._run(prompt, budget, sampling, cancel, on_text, grammar=grammar)
                return ChatReply(text, len(prompt), used, "length" if finish == "length" else "stop")
            assert tools is not None
            content = ""
            used = 0
            if tools.mode == "auto":
                watch = TriggerWatch(fmt, on_text)
                trigger_ids = self._single_token(fmt.trigger)
                _, finish, used = self._run(
                    prompt,
                    budget,
                    {**sampling, "repeat_penalty": self.repeat_penalty},
                    cancel,
                    watch.feed,
                    stop=stop,
                    trigger_token=trigger_ids,
                )
                content = watch.finish()
                if not watch.triggered:
                    return ChatReply(content, len(prompt), used, "length" if finish == "length" else "stop")
            call_prompt = prompt + self._llama.tokenize(
                (content + fmt.prefill).encode("utf-8"), add_bos=False, special=True
            )
            if len(call_prompt) >= self.context_size:
                raise PromptTooLong(len(call_prompt), self.context_size - 1)
            scanner = CallScanner(fmt)
            ids: list[str] = []
            pending: list[ToolCallDelta] = []
            kept: list[ToolCall] = []

            def emit(delta: ToolCallDelta) -> None:
                if on_tool_call is not None:
                    on_tool_call(delta)

            def feed(piece: str) -> bool:
                """The first call streams as it is written; each later one once it is complete
                and not a repeat of an earlier one (small models loop on calls): a repeat ends
                the reply, and is left out of it."""
                for event in scanner.feed(piece):
                    if event.name is not None:
                        ids.append(f"call_{secrets.token_hex(12)}")
                    delta = ToolCallDelta(
                        event.index, ids[event.index] if event.name is not None else None, event.name, event.arguments
                    )
                    (emit if event.index == 0 else pending.append)(delta)
                while len(kept) < len(scanner.calls):
                    name, arguments = scanner.calls[len(kept)]
                    if any(c.name == name and c.arguments == arguments for c in kept):
                        return True
                    index = len(kept)
                    for delta in [d for d in pending if d.index == index]:
                        emit(delta)
                    pending[:] = [d for d in pending if d.index != index]
                    kept.append(ToolCall(ids[index], name, arguments))
                return False

            left = max(1, min(budget - used, self.context_size - len(call_prompt)))
            _, finish, called = self._run(call_prompt, left, sampling, cancel, feed, grammar=grammar)
        calls = tuple(kept)
        reason = "length" if finish == "length" else "tool_calls" if calls else "stop"
        return ChatReply(content, len(prompt), used + called, reason, calls)

    def _single_token(self, text: str) -> int | None:
        """The token id of a trigger that is one token (a control token's text never appears in
        the generated text: it is watched for by id)."""
        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens[0] if len(tokens) == 1 else None

    def _run(
        self,
        prompt: list[int],
        max_tokens: int,
        sampling: dict,
        cancel: threading.Event | None,
        on_text: Callable[[str], bool | None] | None,
        *,
        grammar: object | None = None,
        stop: Sequence[str] = (),
        trigger_token: int | None = None,
    ) -> tuple[str, str, int]:
        """One streamed completion; `on_text` returning True ends it early. The text, the finish
        reason, the tokens generated. Runs under the lock."""
        from llama_cpp import StoppingCriteriaList

        seen = {"trigger": False}
        criteria = None
        if trigger_token is not None:
            start = len(prompt)

            def triggered(input_ids, _logits) -> bool:  # noqa: ANN001 — llama-cpp-python's signature
                if len(input_ids) > start and trigger_token in input_ids[start:]:
                    seen["trigger"] = True
                    return True
                return False

            criteria = StoppingCriteriaList([triggered])
        options = dict(sampling)
        options.setdefault("repeat_penalty", 1.0)  # JSON repeats its punctuation by nature
        stream = self._llama.create_completion(
            prompt=prompt,
            max_tokens=max_tokens,
            stop=[*self._stop, *stop],
            stream=True,
            grammar=grammar,
            stopping_criteria=criteria,
            **options,
        )
        pieces: list[str] = []
        finish = "stop"
        with contextlib.closing(stream):
            try:
                for chunk in stream:
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled(
                            "generation cancelled", completion_tokens=self.count_text_tokens("".join(pieces))
                        )
                    choice = chunk["choices"][0]
                    if choice["text"]:
                        pieces.append(choice["text"])
                        if on_text is not None and on_text(choice["text"]):
                            break
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            except RuntimeError as exc:
                if not self._abort.raised:
                    raise
                raise GenerationCancelled(
                    "generation cancelled during evaluation", completion_tokens=self.count_text_tokens("".join(pieces))
                ) from exc
        if seen["trigger"] and on_text is not None:
            on_text("")  # the opener was a control token: the watch learns it now
        text = "".join(pieces)
        return text, finish, max(self.count_text_tokens(text), 1 if seen["trigger"] else 0)

