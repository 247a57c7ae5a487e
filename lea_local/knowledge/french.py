"""The French analyser of the knowledge base: the same terms for the passages and the questions.

A word is lower-cased, stemmed by Snowball's French stemmer (the algorithm PostgreSQL's 'french'
configuration uses), then folded (diacritics and ligatures dropped): "Courtière" and "courtier"
meet at "courti", "préalable" and "prealable" at "prealabl". The stem is taken before folding
because the stemmer reads the accents ("achetée" → "achet", but "achetee" → "achete").

Stop words (articles, pronouns, auxiliaries, question words) are dropped: a question's own
words are what it is about.

A question is then expanded with the domain thesaurus (`thesaurus-fr.txt`, shipped in the
package): a user who asks about the "rétribution" of an "agent" finds the passage that says
"commission" and "courtier". The expansions are searched apart and weigh less than the user's
own terms. The agency can add its own vocabulary in a file of the same format (`AgencyThesaurus`,
LEA_KNOWLEDGE_THESAURUS): its words for things the documents name otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import snowballstemmer

log = logging.getLogger(__name__)

THESAURUS = Path(__file__).with_name("thesaurus-fr.txt")
MAX_RULE_ENTRIES = 50
"""The most entries (comma-separated terms, both sides of `=>` together) one thesaurus line may
have; the shipped thesaurus' longest has 20. A longer line makes no rule (PUT answers 400 naming
it): one line of 50,000 synonyms once made every question of one word search 50,000 terms."""
MAX_EXPANSIONS = 64
"""The most thesaurus entries one question is also searched with (the first in the thesaurus'
order); the shipped thesaurus gives a one-word question at most 19."""

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "’": "'", "ʼ": "'"})
_WORD = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """Lower-case, without diacritics or ligatures ("Œuvre à côté" → "oeuvre a cote")."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES).lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# Snowball's French stop list, plus question words and the verbs every question carries
# ("doit", "faut", "peut"). Compared after folding. "bien" stays: in real estate it is a noun.
STOP_WORDS = frozenset(
    fold(word)
    for word in """
    au aux avec ce ces dans de des du elle en et eux il je la le leur lui ma mais me même mes moi mon
    ne nos notre nous on ou où par pas pour qu que qui sa se ses son sur ta te tes toi ton tu un une
    vos votre vous c d j l à m n s t y été étée étées étés étant suis es est sommes êtes sont serai
    seras sera serons serez seront serais serait serions seriez seraient étais était étions étiez
    étaient fus fut fûmes fûtes furent sois soit soyons soyez soient fusse fusses fût fussions fussiez
    fussent ayant eu eue eues eus ai as avons avez ont aurai auras aura aurons aurez auront aurais
    aurait aurions auriez auraient avais avait avions aviez avaient eut eûmes eûtes eurent aie aies
    ait ayons ayez aient eusse eusses eût eussions eussiez eussent ceci cela celà cet cette ici ils
    les leurs quel quels quelle quelles sans soi a
    comment combien pourquoi quand quoi dont lequel laquelle lesquels lesquelles
    jusqu lorsqu puisqu quelqu
    dois doit doivent devons devez devrait devrais faut faudra faudrait peut peux peuvent pouvons
    pouvez pourrait pourrais puis puisse fait faire font
    est-ce ça cas chez tout tous toute toutes très aussi si alors donc ainsi etc svp merci bonjour
    """.split()
)


_local = threading.local()


def _stemmer() -> snowballstemmer.stemmer:
    # A Snowball stemmer keeps state while it works: one per thread.
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("french")
    return stemmer


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The folded stem of one lower-case word."""
    return fold(_stemmer().stemWord(word))


def words(text: str) -> list[str]:
    """The lower-case words of a text; elisions ("l'", "qu'") come out as their own stop words."""
    return _WORD.findall(text.translate(_LIGATURES).lower())


@functools.lru_cache(maxsize=65536)
def _is_stop_word(word: str) -> bool:
    return fold(word) in STOP_WORDS


def terms(text: str) -> list[str]:
    """The searchable terms of a text, in order: stems of its words less the stop words."""
    return [stem(word) for word in words(text) if not _is_stop_word(word)]


@dataclass(frozen=True)
class Phrase:
    """One thesaurus entry: its terms (stems), and its folded text with its stop words (for
    PostgreSQL, which stems by itself and counts a stop word's place in a phrase)."""

    terms: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class AnalysedQuery:
    terms: tuple[str, ...]
    """The user's own terms, without repeats."""
    words: tuple[str, ...]
    """The same, as folded words."""
    expansions: tuple[Phrase, ...]
    """Thesaurus phrases the question implies, none of them already among its terms."""
    text: str = ""
    """The question as typed (the semantic retrievers read it whole, accents and all)."""

    @property
    def empty(self) -> bool:
        return not self.terms


@dataclass(frozen=True)
class _Rule:
    triggers: tuple[Phrase, ...]
    adds: tuple[Phrase, ...]


class Thesaurus:
    """Groups of equivalent terms (each line `a, b, c`) and one-way expansions (`a, b => c, d`:
    a question about a or b also looks for c and d, not the other way)."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._rules: list[_Rule] = []
        self.lines_without_rule: list[int] = []
        """1-based numbers of the lines that say something but make no rule (only stop words, or
        nothing on one side of `=>`): what an agency's own file should be told about."""
        self.lines_too_long: dict[int, int] = {}
        """Line number → its entries, for the lines of more than MAX_RULE_ENTRIES (no rule)."""
        for number, raw in enumerate(lines, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            entries = _entries(line)
            if entries > MAX_RULE_ENTRIES:  # counted before any is stemmed: cheap to refuse
                self.lines_too_long[number] = entries
                continue
            if "=>" in line:
                left, right = line.split("=>", 1)
                triggers, adds = self._phrases(left), self._phrases(right)
            else:
                triggers = adds = self._phrases(line)
            if triggers and adds:
                self._rules.append(_Rule(triggers, adds))
            else:
                self.lines_without_rule.append(number)
        # Each trigger under its first term: `expand` looks only at the rules a question's terms
        # can start (grounding expands every term of every candidate passage's question: a scan
        # of all the rules each time cost a turn about 60 ms).
        self._by_first_term: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
        for index, rule in enumerate(self._rules):
            for trigger in rule.triggers:
                self._by_first_term.setdefault(trigger.terms[0], []).append((index, trigger.terms))

    @staticmethod
    def _phrases(text: str) -> tuple[Phrase, ...]:
        found = []
        for entry in text.split(","):
            phrase = Phrase(tuple(terms(entry)), " ".join(fold(word) for word in words(entry)))
            if phrase.terms:
                found.append(phrase)
        return tuple(found)

    @classmethod
    def load(cls, path: Path = THESAURUS) -> Thesaurus:
        return cls(path.read_text(encoding="utf-8").splitlines())

    def __len__(self) -> int:
        return len(self._rules)

    def expand(self, query_terms: tuple[str, ...]) -> tuple[Phrase, ...]:
        """The phrases implied by a question's terms, each once, none already in the question; at
        most MAX_EXPANSIONS."""
        triggered: set[int] = set()
        for start, term in enumerate(query_terms):
            for index, trigger in self._by_first_term.get(term, ()):
                if query_terms[start : start + len(trigger)] == trigger:
                    triggered.add(index)
        found: dict[tuple[str, ...], Phrase] = {}
        present = set(query_terms)
        for index in sorted(triggered):  # in the thesaurus' order
            for phrase in self._rules[index].adds:
                if not set(phrase.terms) <= present:
                    found.setdefault(phrase.terms, phrase)
                    if len(found) >= MAX_EXPANSIONS:
                        return tuple(found.values())
        return tuple(found.values())


def _entries(line: str) -> int:
    """A thesaurus line's entries (comments stripped), `=>` sides together."""
    return line.replace("=>", ",", 1).count(",") + 1


def lines_too_long(lines: Iterable[str]) -> dict[int, int]:
    """Line number → entries, for the lines that break MAX_RULE_ENTRIES (what `Thesaurus` skips),
    found without parsing the rules: milliseconds for a megabyte."""
    found = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if line and (entries := _entries(line)) > MAX_RULE_ENTRIES:
            found[number] = entries
    return found


@functools.lru_cache(maxsize=1)
def default_thesaurus() -> Thesaurus:
    return Thesaurus.load()


class AgencyThesaurus:
    """The shipped thesaurus followed by the agency's own lines (a file in the same format),
    read again whenever that file changes: a rule written there counts from the next search, with
    no reindex (only questions are expanded). Without the file, the shipped thesaurus alone. A
    file that cannot be read (not UTF-8, unreadable) is logged and the version before it stays.
    Cheap to ask on every search: one stat of the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._current = default_thesaurus()

    def text(self) -> str:
        """The file as it is ("" without one)."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def replace(self, text: str) -> None:
        """Write the file whole, atomically (a search reads the old rules or the new, never half)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)

    def current(self) -> Thesaurus:
        stamp = self._stamp_now()
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._current = self._read(stamp)
                    self._stamp = stamp
        return self._current

    def _stamp_now(self) -> tuple | None:
        """What says the file changed (None: there is none); an error is its own stamp, so
        that it is logged once, not at every search."""
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as error:
            return ("unreadable", str(error))
        return (status.st_mtime_ns, status.st_size, status.st_ino)

    def _read(self, stamp: tuple | None) -> Thesaurus:
        if stamp is None:
            if self._stamp is not None:
                log.info("knowledge: agency thesaurus %s removed; the shipped thesaurus alone", self.path)
            return default_thesaurus()
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            log.error("knowledge: agency thesaurus %s unreadable (%s); the rules read before stay", self.path, error)
            return self._current
        shipped = THESAURUS.read_text(encoding="utf-8").splitlines()
        combined = Thesaurus([*shipped, *lines])
        own = len(combined) - len(default_thesaurus())
        log.info("knowledge: agency thesaurus %s read, rules of its own: %d", self.path, own)
        if combined.lines_too_long:
            log.warning(
                "knowledge: agency thesaurus %s: lines %s have more than %d entries and make no rule",
                self.path,
                ", ".join(str(number - len(shipped)) for number in combined.lines_too_long),
                MAX_RULE_ENTRIES,
            )
        return combined


def analyse_query(text: str, thesaurus: Thesaurus | None = None) -> AnalysedQuery:
    """A question's terms and its thesaurus expansions."""
    kept: dict[str, str] = {}
    for word in words(text):
        folded = fold(word)
        if folded not in STOP_WORDS:
            kept.setdefault(stem(word), folded)
    ordered = tuple(terms(text))
    chosen = thesaurus if thesaurus is not None else default_thesaurus()
    expansions = chosen.expand(ordered) if ordered else ()
    return AnalysedQuery(tuple(kept), tuple(kept.values()), expansions, text)
