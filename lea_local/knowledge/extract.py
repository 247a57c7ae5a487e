"""Text out of the agency's documents: Markdown, plain text, HTML, PDF and DOCX.

Each format is read by a maintained library (markdown-it-py, BeautifulSoup, pypdf, python-docx);
what comes out is the document's title and its sections (the heading path, then the section's
blocks of text: paragraphs, list items, table rows, PDF pages). A file that cannot be read
raises DocumentRejected with a plain message; nothing here crashes on a bad file.

A document may also be too large to take (ExtractionLimits: its pages, its characters, a DOCX's
inflated XML): DocumentTooLarge names the setting it hit. The server does not run `extract` in
its own process but in a child with memory and CPU limits (isolation.py): a small hostile file
(a Markdown table of empty cells, a PDF whose pages share one endless content stream) can cost
gigabytes or minutes in the libraries, which no check before them can foresee.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePath

log = logging.getLogger(__name__)

FORMATS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}

# A DOCX is a zip: refuse one that would inflate past this (a zip bomb), before reading it.
# Its XML has its own, lower cap (ExtractionLimits.max_docx_xml_bytes): images are not parsed.
MAX_UNZIPPED_BYTES = 200_000_000
# Plain text with more control characters than this share is binary, whatever its extension.
MAX_CONTROL_SHARE = 0.01

_SPACES = re.compile(r"\s+")


class DocumentRejected(ValueError):
    """The file cannot be taken into the knowledge base; the message says why, in plain words."""


class DocumentTooLarge(DocumentRejected):
    """The document passes a limit of ExtractionLimits (or of the child process extracting it);
    `setting` is the variable that sets that limit, named in the message too."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(f"{message} ({setting})")
        self.setting = setting


@dataclass(frozen=True)
class ExtractionLimits:
    """What one document may cost (the LEA_KNOWLEDGE_MAX_* settings; see settings.py for why
    each default)."""

    max_pages: int = 1_000
    max_chars: int = 4_000_000
    max_passages: int = 5_000
    max_docx_xml_bytes: int = 50_000_000
    max_memory_bytes: int = 1_000_000_000
    """The child process's address space (RLIMIT_AS), libraries included."""
    max_cpu_seconds: int = 120
    """The child process's CPU time (RLIMIT_CPU); its wall-clock time is bounded from it."""

    @classmethod
    def from_settings(cls, settings) -> ExtractionLimits:
        return cls(
            max_pages=settings.knowledge_max_pages,
            max_chars=settings.knowledge_max_chars,
            max_passages=settings.knowledge_max_passages,
            max_docx_xml_bytes=settings.knowledge_max_docx_xml_bytes,
            max_memory_bytes=settings.knowledge_max_extract_memory_bytes,
            max_cpu_seconds=settings.knowledge_max_extract_seconds,
        )


def too_many_chars(limits: ExtractionLimits) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"the document holds more than {limits.max_chars:,} characters of text", "LEA_KNOWLEDGE_MAX_CHARS"
    )


@dataclass
class Section:
    headings: tuple[str, ...]
    """The heading path, outermost first (empty before the first heading)."""
    blocks: list[str] = field(default_factory=list)


@dataclass
class ExtractedDocument:
    title: str
    format: str
    sections: list[Section]

    @property
    def words(self) -> int:
        return sum(len(block.split()) for section in self.sections for block in section.blocks)


def document_format(file_name: str) -> str:
    suffix = PurePath(file_name).suffix.lower()
    found = FORMATS.get(suffix)
    if found is None:
        known = ", ".join(sorted(FORMATS))
        if suffix == ".doc":
            raise DocumentRejected("unsupported format .doc (old Word format): save it as .docx")
        shown = suffix or "(no extension)"
        raise DocumentRejected(f"unsupported format {shown}: accepted formats are {known}")
    return found


def extract(file_name: str, data: bytes, limits: ExtractionLimits | None = None) -> ExtractedDocument:
    """The title and sections of a document, told apart by its extension, in this process:
    `limits` caps its pages, characters and DOCX XML, not the memory or CPU time it takes (run
    it through isolation.extract_isolated for that)."""
    limits = limits or ExtractionLimits()
    kind = document_format(file_name)
    if not data:
        raise DocumentRejected("the file is empty")
    stem = PurePath(file_name).stem
    reader = {"markdown": _markdown, "text": _text, "html": _html, "pdf": _pdf, "docx": _docx}[kind]
    try:
        document = reader(data, stem, limits)
    except (DocumentRejected, MemoryError):
        raise
    except Exception as exc:  # a library's own error on a malformed file: a rejection, not a crash
        if "memory allocation failed" in str(exc).lower():  # lxml's word for MemoryError
            raise MemoryError(str(exc)) from exc
        log.info("could not read %s (%s): %s", file_name, kind, exc)
        raise DocumentRejected(f"not a readable {kind.upper()} file ({type(exc).__name__})") from exc
    document.sections = [s for s in document.sections if s.blocks]
    if not document.sections:
        raise DocumentRejected("no text found in the document")
    if sum(len(block) for section in document.sections for block in section.blocks) > limits.max_chars:
        raise too_many_chars(limits)
    return document


class _Builder:
    """Sections as headings come: a heading of level n replaces the path from level n on."""

    def __init__(self) -> None:
        self.sections: list[Section] = [Section(())]
        self._levels: list[tuple[int, str]] = []
        self.first_heading: str | None = None

    def heading(self, level: int, text: str) -> None:
        text = _clean(text)
        if not text:
            return
        if self.first_heading is None:
            self.first_heading = text
        self._levels = [(lvl, t) for lvl, t in self._levels if lvl < level] + [(level, text)]
        self.sections.append(Section(tuple(t for _, t in self._levels)))

    def block(self, text: str) -> None:
        text = _clean(text)
        if text:
            self.sections[-1].blocks.append(text)


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _decode(data: bytes) -> str:
    if b"\x00" in data:
        raise DocumentRejected("not a text file (binary content)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")  # Windows' Western encoding, common for French text files
        except UnicodeDecodeError:
            raise DocumentRejected("not a text file (unknown encoding or binary content)") from None
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f")
    if controls > MAX_CONTROL_SHARE * len(text):
        raise DocumentRejected("not a text file (binary content)")
    return text


# --- Markdown ------------------------------------------------------------------------------


def _markdown(data: bytes, stem: str, limits: ExtractionLimits) -> ExtractedDocument:
    from markdown_it import MarkdownIt

    source = _decode(data)
    tokens = MarkdownIt("commonmark").enable("table").parse(source)
    built = _Builder()
    row: list[str] = []
    heading_level = 0
    list_depth = 0
    in_cell = False
    for token in tokens:
        if token.type == "heading_open":
            heading_level = int(token.tag[1])
        elif token.type == "heading_close":
            heading_level = 0
        elif token.type in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
        elif token.type in ("th_open", "td_open"):
            in_cell = True
        elif token.type in ("th_close", "td_close"):
            in_cell = False
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            built.block(" | ".join(row))
        elif token.type == "inline":
            text = _inline_text(token)
            if heading_level:
                built.heading(heading_level, text)
            elif in_cell:
                row.append(_clean(text))
            else:
                built.block(("- " if list_depth else "") + text)
        elif token.type in ("code_block", "fence"):
            built.block(token.content)
    return ExtractedDocument(built.first_heading or stem, "markdown", built.sections)


def _inline_text(token) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(_inline_text(child))
    return "".join(parts)


# --- plain text ----------------------------------------------------------------------------

_UNDERLINE = re.compile(r"^\s*(=+|-+)\s*$")


def _text(data: bytes, stem: str, limits: ExtractionLimits) -> ExtractedDocument:
    """Paragraphs are separated by blank lines; a line underlined with === or --- is a heading
    (level 1 or 2), as in Markdown's and reStructuredText's convention."""
    lines = _decode(data).splitlines()
    built = _Builder()
    paragraph: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and _UNDERLINE.match(following) and len(following.strip()) >= 3:
            built.block(" ".join(paragraph))
            paragraph = []
            built.heading(1 if following.strip()[0] == "=" else 2, line)
            index += 2
            continue
        if line.strip():
            paragraph.append(line)
        else:
            built.block(" ".join(paragraph))
            paragraph = []
        index += 1
    built.block(" ".join(paragraph))
    return ExtractedDocument(built.first_heading or stem, "text", built.sections)


# --- HTML ----------------------------------------------------------------------------------

_HTML_SKIPPED = {"script", "style", "noscript", "template", "head", "nav", "svg", "iframe", "object", "form"}
_HTML_BLOCKS = {
    "p", "div", "li", "pre", "blockquote", "tr", "dt", "dd", "caption", "figcaption", "section",
    "article", "main", "header", "footer", "aside", "table", "ul", "ol", "dl", "address", "hr",
}  # fmt: skip
_HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _html(data: bytes, stem: str, limits: ExtractionLimits) -> ExtractedDocument:
    from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, ProcessingInstruction, Tag

    if b"\x00" in data:
        raise DocumentRejected("not an HTML file (binary content)")
    soup = BeautifulSoup(data, "lxml")
    built = _Builder()
    buffer: list[str] = []

    def flush() -> None:
        built.block("".join(buffer))
        buffer.clear()

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, (Comment, Doctype, ProcessingInstruction)):
                continue
            if isinstance(child, NavigableString):
                buffer.append(str(child))
                continue
            if not isinstance(child, Tag) or child.name in _HTML_SKIPPED:
                continue
            if child.name in _HTML_HEADINGS:
                flush()
                built.heading(_HTML_HEADINGS[child.name], child.get_text(" "))
                continue
            if child.name == "br":
                buffer.append(" ")
                continue
            if child.name in ("td", "th") and buffer and "".join(buffer).strip():
                buffer.append(" | ")
            block = child.name in _HTML_BLOCKS
            if block:
                flush()
            walk(child)
            if block:
                flush()

    walk(soup.body or soup)
    flush()
    page_title = soup.title.get_text(" ") if soup.title else ""
    title = built.first_heading or _clean(page_title) or stem
    return ExtractedDocument(title, "html", built.sections)


# --- PDF -----------------------------------------------------------------------------------


def _pdf(data: bytes, stem: str, limits: ExtractionLimits) -> ExtractedDocument:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise DocumentRejected("not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):  # an empty user password opens many PDFs
            raise DocumentRejected("the PDF is encrypted (password-protected): upload an unprotected copy")
        count = len(reader.pages)
        if count > limits.max_pages:
            raise DocumentTooLarge(
                f"the PDF has {count:,} pages, more than {limits.max_pages:,}", "LEA_KNOWLEDGE_MAX_PAGES"
            )
        pages: list[str] = []
        chars = 0
        for page in reader.pages:  # page by page: stop as soon as the text passes the cap
            pages.append(page.extract_text() or "")
            chars += len(pages[-1])
            if chars > limits.max_chars:
                raise too_many_chars(limits)
    except (FileNotDecryptedError, DependencyError):
        raise DocumentRejected("the PDF is encrypted (password-protected): upload an unprotected copy") from None
    except PdfReadError as exc:
        raise DocumentRejected(f"not a readable PDF file ({exc})") from None
    starts = _outline_starts(reader)
    sections: list[Section] = []
    current: tuple[str, ...] = ()
    for number, text in enumerate(pages, start=1):
        current = starts.get(number - 1, current)
        heading = current or (f"page {number}",)
        blocks = [_clean(p) for p in re.split(r"\n\s*\n", text) if _clean(p)]
        if sections and sections[-1].headings == heading:
            sections[-1].blocks.extend(blocks)
        else:
            sections.append(Section(heading, blocks))
    metadata_title = ""
    try:
        metadata_title = _clean((reader.metadata or {}).get("/Title") or "")
    except Exception:  # a broken Info dictionary: keep the fallback title
        pass
    title = metadata_title or next((s.headings[0] for s in sections if starts and s.headings), "") or stem
    return ExtractedDocument(title, "pdf", sections)


def _outline_starts(reader) -> dict[int, tuple[str, ...]]:
    """The PDF's bookmarks, when it has some: the page (0-based) each top-level one starts on."""
    starts: dict[int, tuple[str, ...]] = {}
    try:
        for item in reader.outline:
            if isinstance(item, list):
                continue  # nested bookmarks: the top level is section enough
            page = reader.get_destination_page_number(item)
            title = _clean(str(item.title or ""))
            if page is not None and title:
                starts.setdefault(page, (title,))
    except Exception:  # a malformed outline: pages are sections enough
        return {}
    return starts


# --- DOCX ----------------------------------------------------------------------------------

_DOCX_HEADING = re.compile(r"^(?:heading|titre|überschrift)\s*(\d)$", re.IGNORECASE)


def _docx(data: bytes, stem: str, limits: ExtractionLimits) -> ExtractedDocument:
    import docx
    from docx.opc.constants import RELATIONSHIP_TYPE as RT
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            inflated = sum(info.file_size for info in archive.infolist())
            xml = sum(info.file_size for info in archive.infolist() if info.filename.endswith((".xml", ".rels")))
    except zipfile.BadZipFile:
        raise DocumentRejected("not a DOCX file (bad zip)") from None
    if "word/document.xml" not in names:
        raise DocumentRejected("not a DOCX file (a zip without a Word document inside)")
    if inflated > MAX_UNZIPPED_BYTES:
        raise DocumentRejected("the DOCX file inflates to more than 200 MB")
    if xml > limits.max_docx_xml_bytes:
        raise DocumentTooLarge(
            f"the DOCX's XML inflates to {xml / 1e6:,.0f} MB, more than {limits.max_docx_xml_bytes / 1e6:,.0f} MB",
            "LEA_KNOWLEDGE_MAX_DOCX_XML_BYTES",
        )
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise DocumentRejected(f"not a readable DOCX file ({exc})") from None
    has_core_properties = any(rel.reltype == RT.CORE_PROPERTIES for rel in document.part.package.rels.values())
    built = _Builder()
    title_style = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            for row in item.rows:
                cells: list[str] = []
                for cell in row.cells:
                    text = _clean(cell.text)
                    if text and (not cells or cells[-1] != text):  # merged cells repeat their text
                        cells.append(text)
                built.block(" | ".join(cells))
            continue
        style = item.style.name if item.style is not None else ""
        match = _DOCX_HEADING.match(style or "")
        if match:
            built.heading(int(match.group(1)), item.text)
        elif style in ("Title", "Titre"):
            title_style = title_style or _clean(item.text)
        else:
            prefix = "- " if style and style.lower().startswith(("list", "liste")) else ""
            built.block(prefix + item.text)
    # Without a core-properties part (docProps/core.xml), python-docx makes one up whose title is
    # "Word Document": only a title the file itself holds counts.
    core_title = _clean(document.core_properties.title or "") if has_core_properties else ""
    return ExtractedDocument(core_title or title_style or built.first_heading or stem, "docx", built.sections)
