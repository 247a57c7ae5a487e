"""`ReplyStream`: the stored reply's cleaning (`clean_reply`) while the reply is generated, for
streamed turns. The pieces it returns, joined, must be the stored text, and it should hold back
no more than the word being written."""

from __future__ import annotations

import re

import pytest

from lea_local.llm.reply_cleaner import ReplyStream, clean_reply
from tests.test_reply_cleaner import CLEAN_CASES, FRENCH, LOOPS

# Constructs whose cleaning changes once they are complete, cut anywhere while streaming.
STREAM_CASES = [
    "Réponse de Léa : Bonjour, la visite est confirmée.",
    "**Réponse de l'assistante :** Le mandat est signé.",
    "Voici le tableau.\n| Pièce | Surface |\n|---|---:|\n| Salon | 25 m² |\nVoilà.",
    "Consultez [le site du notaire](https://notaires.fr) pour la suite, puis ![le plan](p.png) aussi.",
    "Tapez `oui pour confirmer` puis validez.",
    "Les frais sont _partagés entre les parties_ et __réglés chez le notaire__.",
    "Le prix est ~~trop élevé pour ce secteur~~ correct.",
    "C'est noté pour demain.<|im_end|>\n<|im_start|>user\nEt demain ?",
    "Je suis Léa. Je suis Léa. Je suis Léa. Je suis Léa.",
    "Oui. Merci beaucoup. Oui. Bonne journée. Oui. Non.",
]
# A loop without sentence punctuation whose second occurrence begins inside an earlier
# sentence: only the end tells where the cut is. The stored text is then the truth.
UNFORESEEABLE = "Bien sûr. La maison est belle et grande avec un jardin et " * 3


def token_pieces(text: str) -> list[str]:
    """Token-like pieces: a word with its leading space, or punctuation on its own."""
    return re.findall(r"\s*\w+|\s*[^\w\s]+|\s+", text)


def streamed(pieces: list[str], final: str) -> tuple[list[str], ReplyStream]:
    stream = ReplyStream()
    deltas = [stream.feed(piece) for piece in pieces]
    deltas.append(stream.finish(final))
    return deltas, stream


CORPUS = (
    [raw for raw, _ in CLEAN_CASES]
    + FRENCH
    + [text for text, _ in LOOPS if not UNFORESEEABLE.startswith(text)]
    + STREAM_CASES
)


@pytest.mark.parametrize("raw", CORPUS)
@pytest.mark.parametrize("split", [token_pieces, list], ids=["tokens", "characters"])
def test_deltas_joined_are_the_stored_reply(raw: str, split) -> None:
    final = clean_reply(raw)
    deltas, stream = streamed(split(raw), final)
    assert not stream.retracted
    assert "".join(deltas) == final


@pytest.mark.parametrize("paragraph", FRENCH[:2] + FRENCH[3:])
def test_little_more_than_the_word_being_written_is_held_back(paragraph: str) -> None:
    """Ordinary French: what is not sent yet is usually the word being written alone, and at
    most three words (words that so far repeat earlier ones: "donne sur la")."""
    stream = ReplyStream()
    held = []
    for piece in token_pieces(paragraph):
        stream.feed(piece)
        held.append(len(clean_reply(stream.raw)[len(stream.sent) :].split()))
    assert max(held) <= 3, held
    assert held.count(1) > 0.7 * len(held), held


def test_a_word_of_letters_is_sent_as_it_grows() -> None:
    """The first delta comes with the engine's first token when it is plain letters."""
    stream = ReplyStream()
    assert [stream.feed(p) for p in ["Bon", "jour", ",", " je", " suis"]] == ["Bon", "jour", "", ", je", " suis"]


@pytest.mark.parametrize(
    ("pieces", "sent"),
    [
        (["Lé", "a", " :", " Bonjour", " à"], ["", "", "", "Bonjour", " à"]),  # maybe a label
        (["A", "ssistant"], ["", ""]),
        (["1", ".", " Visit", "ez"], ["", "", "Visit", "ez"]),  # maybe a list marker
        (["Voici", "\n", "User", " :", " merci"], ["Voici", "", ".", "", ""]),  # the other side's turn
    ],
)
def test_a_word_that_may_still_change_waits(pieces: list[str], sent: list[str]) -> None:
    stream = ReplyStream()
    assert [stream.feed(p) for p in pieces] == sent


def test_the_stored_text_is_the_truth_when_the_stream_was_wrong() -> None:
    final = clean_reply(UNFORESEEABLE)
    deltas, stream = streamed(token_pieces(UNFORESEEABLE), final)
    assert stream.retracted
    assert deltas[-1] == ""
    assert "".join(deltas).startswith(final)


def test_the_final_text_may_differ_from_the_pieces() -> None:
    """The engine drops a loop it detects and the turn may answer with a fallback sentence: the
    rest of the stored text comes with `finish`."""
    deltas, stream = streamed(token_pieces("assistant\n"), "Désolée, je n'ai pas su formuler de réponse.")
    assert not stream.retracted
    assert "".join(deltas) == "Désolée, je n'ai pas su formuler de réponse."
