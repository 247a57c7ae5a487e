"""What Whisper is known to write over noise rather than speech: the subtitle credits and
sign-offs of its training videos. Such a transcript never becomes a user turn (ImmoAssist's
own client drops them too, `../shared/contract/immoassist-next.md`)."""

from __future__ import annotations

import re
import unicodedata

_PATTERNS = [
    r"sous[- ]?titr",  # "Sous-titrage ST' 501", "Sous-titres réalisés par la communauté d'Amara.org"
    r"amara\.org",
    r"\bst'? ?501\b",
    r"radio[- ]canada",
    r"merci d'avoir regard",  # "Merci d'avoir regardé cette vidéo !"
    r"abonnez[- ]vous",
    r"n'oubliez pas de (vous abonner|liker|like)",
    r"subtitles? by",
    r"thanks? (you )?for watching",
    r"like and subscribe",
]
_KNOWN = re.compile("|".join(_PATTERNS), re.IGNORECASE)
# Alone, these are what Whisper says over a breath or a click, not a turn.
_ALONE = {"merci", "merci beaucoup", "au revoir", "bye", "thank you", "you", "musique", "applaudissements", "rires"}


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    return " ".join(re.sub(r"[^\w' ]", " ", text).split())


def is_hallucination(text: str) -> bool:
    """A transcript that is one of Whisper's inventions over noise, or nothing at all."""
    plain = _plain(text)
    if not plain:
        return True
    if re.fullmatch(r"[\[(♪*].*[\])♪*]", text.strip()):  # "[Musique]", "(applaudissements)", "♪"
        return True
    return plain in _ALONE or bool(_KNOWN.search(text))
