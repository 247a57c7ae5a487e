"""Replies made fit to be read aloud: `clean_reply` (labels, other side's turn, Markdown, emoji,
loops) and the repetition detector that stops a looping generation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lea_local.llm.repetition import (
    RepetitionDetector,
    find_repetition,
    normalise_sentence,
    split_sentences,
    truncate_repetition,
)
from lea_local.llm.reply_cleaner import clean_reply

# Léa's shipped system prompts: real French prose with list lines that start alike.
SYSTEM_PROMPTS = sorted((Path(__file__).resolve().parent.parent / "lea_local" / "llm").glob("system_prompt.*.txt"))

LOOP = (
    "Le red choqué est le débat de l'utilisateur. - Le red choqué est le débat de l'utilisateur. "
    "- Le red choqué est le débat de l'utilisateur. - Le red choqué est"
)

CLEAN_CASES = [
    # role labels at the start and at line starts
    ("Assistant : Bonjour, je peux vous aider.", "Bonjour, je peux vous aider."),
    ("assistant: Bonjour.", "Bonjour."),
    ("L'assistant: La visite est confirmée.", "La visite est confirmée."),
    ("L’assistante : Le mandat est signé.", "Le mandat est signé."),
    ("Léa : Le compromis est prêt.", "Le compromis est prêt."),
    ("Lea: Le compromis est prêt.", "Le compromis est prêt."),
    ("AI: The answer.", "The answer."),
    ("Réponse : Il faut un diagnostic.", "Il faut un diagnostic."),
    ("**Réponse :** Il faut un diagnostic.", "Il faut un diagnostic."),
    ("Assistant : Léa : Bonjour.", "Bonjour."),
    ("Voici.\nAssistant : La suite.", "Voici. La suite."),
    ("assistant\nBonjour Madame.", "Bonjour Madame."),
    # not labels: a word that merely starts like one, or a label without its colon
    ("Assistance juridique : contactez votre notaire.", "Assistance juridique : contactez votre notaire."),
    ("Léa vous répond demain.", "Léa vous répond demain."),
    ("L'assistant de direction : M. Martin.", "L'assistant de direction : M. Martin."),
    ("Réponses attendues : deux.", "Réponses attendues : deux."),
    # the model writing the other side of the dialogue
    ("Bien sûr.\nUtilisateur : Merci !\nAssistant : De rien.", "Bien sûr."),
    ("Avec plaisir.\nUser: thanks", "Avec plaisir."),
    ("La visite est à 10 h.\nClient : Parfait.", "La visite est à 10 h."),
    ("C'est noté.<|im_end|>\n<|im_start|>user\nEt demain ?", "C'est noté."),
    ("<|im_start|>assistant\nBonjour.<|im_end|>", "Bonjour."),
    ("Le client a appelé : il rappellera.", "Le client a appelé : il rappellera."),
    # Markdown → plain sentences
    ("Il faut **trois** documents et un *justificatif*.", "Il faut trois documents et un justificatif."),
    ("Les __frais__ sont _partagés_.", "Les frais sont partagés."),
    ("## Étapes\n- Visite du bien\n- Offre d'achat\n- Compromis", "Étapes. Visite du bien. Offre d'achat. Compromis."),
    ("1. Estimation\n2) Mandat\n3. Diffusion de l'annonce", "Estimation. Mandat. Diffusion de l'annonce."),
    ("Consultez [le site du notaire](https://notaires.fr) ou ![plan](p.png).", "Consultez le site du notaire ou plan."),
    ("Tapez `oui` pour confirmer.", "Tapez oui pour confirmer."),
    ("```\nlettre type\n```\nVoilà.", "lettre type. Voilà."),
    ("| Pièce | Surface |\n|---|---:|\n| Salon | 25 m² |", "Pièce, Surface. Salon, 25 m²."),
    ("> Citation du bail.\n\n---\nFin.", "Citation du bail. Fin."),
    ("* Premier point\n* Second point", "Premier point. Second point."),
    # emoji, whitespace, French typography
    ("Bonne visite ! 😊🏠✨", "Bonne visite !"),
    ("Bravo 👍🏽 pour la vente ✅.", "Bravo pour la vente."),
    ("Le loyer   est\tde 900 €   par mois.", "Le loyer est de 900 € par mois."),
    (
        "Prix\u00a0: 300\u00a0000\u00a0€, «\u00a0net vendeur\u00a0».",
        "Prix\u00a0: 300\u00a0000\u00a0€, «\u00a0net vendeur\u00a0».",
    ),
    ("Il fait 19 °C et c’est l’idéal ; n° 12.", "Il fait 19 °C et c’est l’idéal ; n° 12."),
    ("Qu'en pensez-vous ?", "Qu'en pensez-vous ?"),
    # loops, and nothing left
    ("L'assistant: " + LOOP, "Le red choqué est le débat de l'utilisateur."),
    ("Oui. Oui. D'accord. Oui. Non.", "Oui."),
    ("", ""),
    ("   \n  ", ""),
    ("🙂", ""),
    ("Assistant :", ""),
    ("<|im_end|>", ""),
]


@pytest.mark.parametrize(("raw", "expected"), CLEAN_CASES)
def test_clean_reply(raw: str, expected: str) -> None:
    assert clean_reply(raw) == expected


def test_clean_reply_is_stable() -> None:
    """Cleaning twice changes nothing more (the store may receive an already clean reply)."""
    for raw, _ in CLEAN_CASES:
        once = clean_reply(raw)
        assert clean_reply(once) == once


# Varied, ordinary French: answers, a letter, legal wording, a list, a dialogue. Common phrases
# ("de la", "il faut", "le bien", "M.") recur on purpose; none of this may be taken for a loop.
FRENCH = [
    "Pour une vente, il faut d'abord signer un mandat avec le propriétaire. Ensuite, l'agence "
    "organise les visites et recueille les offres. Une fois l'offre acceptée, le notaire rédige le "
    "compromis de vente, puis l'acte authentique est signé environ trois mois plus tard.",
    "Madame, Monsieur,\nSuite à notre visite du 12 mars, je vous confirme l'intérêt de M. Dupont "
    "pour l'appartement situé 4 rue de la Paix. M. Dupont souhaite faire une offre au prix de "
    "250 000 €. Mme Martin, sa compagne, se joindra à lui pour la signature. Je vous prie "
    "d'agréer, Madame, Monsieur, l'expression de mes salutations distinguées.",
    "Le dossier de diagnostic technique comprend le diagnostic de performance énergétique, le "
    "constat de risque d'exposition au plomb, l'état de l'installation intérieure d'électricité et "
    "l'état de l'installation intérieure de gaz. L'état de l'installation intérieure d'électricité "
    "est obligatoire si l'installation a plus de quinze ans. L'état de l'installation intérieure de "
    "gaz l'est aussi dans ce cas.",
    "Il faut vérifier le bail. Il faut aussi vérifier l'état des lieux. Il faut enfin vérifier le "
    "dépôt de garantie. Si vous n'êtes pas certain d'un délai, cela doit être vérifié auprès d'un "
    "juriste.",
    "Oui. Le rendez-vous est confirmé pour samedi. Oui, le propriétaire sera présent. Merci. Je "
    "vous envoie l'adresse par message. Merci.",
    "Je ne sais pas. Je vous conseille de vous adresser au syndic, qui tient le carnet "
    "d'entretien de la copropriété. Le syndic pourra aussi vous transmettre les trois derniers "
    "procès-verbaux d'assemblée générale, etc. et le règlement de copropriété.",
    "Voici les étapes :\n- prendre rendez-vous avec le vendeur ;\n- visiter le bien avec "
    "l'acquéreur ;\n- rédiger l'offre d'achat ;\n- transmettre l'offre au vendeur.",
    "La chambre fait 12 m², le salon 25 m² et la cuisine 8 m². La chambre donne sur la cour, le "
    "salon donne sur la rue et la cuisine donne sur le jardin. Le bien est proche de la gare, de "
    "la mairie et de la poste.",
]


@pytest.mark.parametrize("paragraph", [*FRENCH, *(p.read_text(encoding="utf-8") for p in SYSTEM_PROMPTS)])
def test_ordinary_french_is_not_a_loop(paragraph: str) -> None:
    assert find_repetition(paragraph) is None
    assert truncate_repetition(paragraph) == paragraph
    assert not _stream(paragraph).fired


LOOPS = [
    # (generated text, what is kept)
    (LOOP, "Le red choqué est le débat de l'utilisateur."),
    (
        "Bonjour. Je vais allumer les lumières.\nJe vais allumer les lumières.\nJe vais",
        "Bonjour. Je vais allumer les lumières.",
    ),
    ("Voici :\n1. Le salon est allumé.\n2. Le salon est allumé.\n3. Le", "Voici :\n1. Le salon est allumé."),
    # no sentence punctuation at all: the same words over and over
    ("la maison est belle et grande avec un jardin " * 4, "la maison est belle et grande avec un jardin"),
    ("Bien sûr. La maison est belle et grande avec un jardin et " * 3, "Bien sûr."),
    ("très " * 30, "très"),
    # short sentences may come twice, not three times
    ("Oui. Oui. D'accord. Oui. Non.", "Oui."),
    # case, punctuation, spacing and list markers do not hide a repeat
    ("LE BIEN EST VENDU ! - le bien  est vendu. Et après", "LE BIEN EST VENDU !"),
]


@pytest.mark.parametrize(("text", "kept"), LOOPS)
def test_loops_are_found_and_cut(text: str, kept: str) -> None:
    assert truncate_repetition(text) == kept
    detector = _stream(text + " Fin.")
    assert detector.fired
    # While streaming, less is known than at the end: the cut may come later, never sooner,
    # and what is kept never repeats itself.
    assert detector.kept_text().startswith(kept)
    assert text.startswith(detector.kept_text())
    assert find_repetition(detector.kept_text()) is None


def test_detector_fires_as_soon_as_a_long_sentence_comes_back() -> None:
    """Stopping at the 2nd occurrence: the 3rd is never generated."""
    sentence = "Le salon et la cuisine sont allumés."
    detector = RepetitionDetector()
    fired_at = None
    for i, piece in enumerate(_pieces(f"{sentence} {sentence} {sentence} {sentence}")):
        if detector.feed(piece):
            fired_at = i
            break
    assert fired_at is not None
    assert detector.text.count("allumés") == 2
    assert detector.kept_text() == sentence


def test_detector_waits_for_the_sentence_to_end() -> None:
    detector = RepetitionDetector()
    assert not detector.feed("Le bien est vendu. Le bien est vendu")
    assert not detector.feed(".")  # what follows the period is not known yet ("M. …", "etc. et")
    assert detector.feed(" Et")


def test_sentences_ignore_abbreviations_and_lower_case_continuations() -> None:
    text = "M. Dupont et Mme Roux ont visité, etc. et ils reviendront. Art. 3 : le bail. Voilà"
    keys = [s.key for s in split_sentences(text, complete=True)]
    assert keys == ["m dupont et mme roux ont visité etc et ils reviendront", "art 3 le bail", "voilà"]
    assert [s.key for s in split_sentences(text, complete=False)] == keys[:2]


def test_normalise_sentence() -> None:
    assert normalise_sentence("- Le Red  choqué, est-il là ?") == "le red choqué est il là"
    assert normalise_sentence("2) L’état des lieux…") == "l état des lieux"


def _pieces(text: str) -> list[str]:
    """Token-like pieces: a word with its leading space, or punctuation on its own."""
    return re.findall(r"\s*\w+|\s*[^\w\s]+|\s+", text)


def _stream(text: str) -> RepetitionDetector:
    detector = RepetitionDetector()
    for piece in _pieces(text):
        if detector.feed(piece):
            break
    return detector
