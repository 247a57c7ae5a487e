#!/usr/bin/env python3
"""What a grammar costs: tokens per second of a constrained tool call against unconstrained
text on the same model, and the time to build the grammar of ImmoAssist's `create_pa` (21
fields, 18 required) from its JSON Schema.

    .venv/bin/python scripts/fetch_eval_model.py      # Qwen2.5-Coder-1.5B-Instruct Q4_K_M
    .venv/bin/python scripts/bench_tool_calls.py [GGUF] [--runs 3] [--threads N]

Generation speed is measured from the first generated token to the last (prompt evaluation
left out), through the engine's own generation path (`LlamaCppChatEngine._run`), greedy. The
constrained run is a `create_pa` call (tool_choice naming it, as ImmoAssist's promise to purchase
would be made); the unconstrained run is free text after the same prompt prefix. Medians of
--runs runs after one warm-up."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lea_local.llm.base import ChatMessage, ToolSpec, ToolUse  # noqa: E402
from lea_local.llm.grammar import check_schema  # noqa: E402
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine  # noqa: E402
from lea_local.tools.immoassist_tools import PROMISE_TO_PURCHASE, SYSTEM_PROMPT, TOOLS  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "eval" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
TEXT_ASK = "Écris un long paragraphe qui explique à un acheteur les étapes d'une promesse d'achat au Québec."


def speed(engine: LlamaCppChatEngine, prompt: list[int], max_tokens: int, grammar: object | None) -> tuple[float, int]:
    """Tokens per second from the first generated piece to the last, and the tokens generated."""
    stamps: list[float] = []
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        stamps.append(time.perf_counter())
        pieces.append(piece)

    with engine._lock:
        text, _, _ = engine._run(prompt, max_tokens, {"temperature": 0.0}, None, on_text, grammar=grammar)
    tokens = engine.count_text_tokens(text)
    checks = getattr(engine._llama._sampler, "full_checks", None)
    if checks is not None:
        print(f"  constrained: {checks} of {tokens} tokens needed the whole vocabulary checked", flush=True)
    # The first piece's time includes the prompt's evaluation: speed counts the tokens after it.
    return (tokens - 1) / (stamps[-1] - stamps[0]), tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=400)
    args = parser.parse_args()
    from llama_cpp import LlamaGrammar

    engine = LlamaCppChatEngine(args.model, context_size=4096, threads=args.threads, prompt_cache_bytes=0)
    specs = tuple(
        ToolSpec(t["function"]["name"], t["function"]["description"], check_schema(t["function"]["parameters"]))
        for t in TOOLS
    )
    create_pa = ToolUse(specs, "named", name="create_pa", parallel=False)

    builds = []
    for _ in range(args.runs + 1):
        started = time.perf_counter()
        gbnf = engine.build_grammar(create_pa, None)
        builds.append(time.perf_counter() - started)
    grammar = LlamaGrammar.from_string(gbnf, verbose=False)

    system = ChatMessage("system", SYSTEM_PROMPT)
    call_prompt = engine._prompt_tokens([system, ChatMessage("user", PROMISE_TO_PURCHASE)], specs)
    call_prompt += engine._llama.tokenize(engine.tool_format.prefill.encode(), add_bos=False, special=True)
    text_prompt = engine._prompt_tokens([system, ChatMessage("user", TEXT_ASK)], specs)

    free, constrained = [], []
    for run in range(args.runs + 1):
        free_speed, free_tokens = speed(engine, text_prompt, args.max_tokens, None)
        call_speed, call_tokens = speed(engine, call_prompt, args.max_tokens, grammar)
        if run:  # the first is a warm-up
            free.append(free_speed)
            constrained.append(call_speed)
        print(
            f"run {run}: free {free_speed:.1f} tok/s ({free_tokens} tokens), "
            f"create_pa call {call_speed:.1f} tok/s ({call_tokens} tokens)",
            flush=True,
        )
    free_median, call_median = statistics.median(free), statistics.median(constrained)
    print()
    machine = platform.processor() or platform.machine()
    print(f"model: {args.model.name} ({engine.tool_format.family} format), {machine}")
    print(f"threads: {args.threads or 'default'}; GPU layers: {engine.gpu_layers}")
    build_ms = statistics.median(builds[1:]) * 1000
    print(f"grammar for create_pa: {len(gbnf)} characters, built and parsed in {build_ms:.1f} ms")
    print(f"unconstrained text:      {free_median:.1f} tokens/s")
    print(f"constrained create_pa:   {call_median:.1f} tokens/s ({call_median / free_median:.0%} of unconstrained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
