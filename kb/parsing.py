"""Turn an uploaded file into text sections that remember where they came from.

The file's bytes decide what it is, not its name: a renamed executable is refused, a PDF is a
PDF whatever it is called. Supported: PDF (per page), DOCX and Markdown and HTML (per heading),
plain text (per heading too: a short line standing alone above a paragraph); UTF-8, or
GB18030 for Chinese text files.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser

from app.core.errors import InvalidInput

SUPPORTED = "PDF, DOCX, Markdown, HTML or plain text"


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None
    heading: str | None = None


def sniff(data: bytes, filename: str) -> str:
    name = filename.lower()
    if not data.strip():
        raise InvalidInput(f"{filename} is empty")
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if "word/document.xml" in archive.namelist():
                    return "docx"
        except zipfile.BadZipFile:
            pass
        raise InvalidInput(f"{filename} is an archive, not a DOCX document; upload {SUPPORTED}")
    if name.endswith((".pdf", ".docx")):
        raise InvalidInput(f"{filename} is not really a {name.rsplit('.', 1)[1].upper()} file")
    if b"\x00" in data[:4096]:
        raise InvalidInput(f"{filename} is a binary file; upload {SUPPORTED}")
    head = data[:512].lstrip().lower()
    if name.endswith((".html", ".htm")) or head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if name.endswith((".md", ".markdown")):
        return "markdown"
    return "text"


def decode(data: bytes, filename: str) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InvalidInput(f"{filename} is not UTF-8 or GB18030 text")


def parse(data: bytes, filename: str) -> tuple[str, list[Section]]:
    kind = sniff(data, filename)
    parser = {"pdf": _pdf, "docx": _docx, "html": _html, "markdown": _markdown, "text": _text}[kind]
    sections = [s for s in parser(data, filename) if s.text.strip()]
    if not sections:
        raise InvalidInput(f"{filename} has no text to index (a scanned PDF needs OCR first)")
    return kind, sections


def _pdf(data: bytes, filename: str) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidInput(f"{filename} is encrypted; upload it without a password")
        return [Section(page.extract_text() or "", page=number) for number, page in enumerate(reader.pages, 1)]
    except InvalidInput:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{filename} is a damaged PDF ({exc})") from None


def _docx(data: bytes, filename: str) -> list[Section]:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many kinds for a broken package
        raise InvalidInput(f"{filename} is a damaged DOCX ({exc})") from None
    sections: list[Section] = []
    heading, lines = None, []
    for paragraph in document.paragraphs:
        if paragraph.style is not None and (paragraph.style.name or "").startswith("Heading"):
            sections.append(Section("\n".join(lines), heading=heading))
            heading, lines = paragraph.text.strip() or heading, []
        elif paragraph.text.strip():
            lines.append(paragraph.text)
    sections.append(Section("\n".join(lines), heading=heading))
    return sections


def _markdown(data: bytes, filename: str) -> list[Section]:
    sections: list[Section] = []
    heading, lines = None, []
    for line in decode(data, filename).splitlines():
        match = re.match(r"^#{1,6}\s+(.*)", line)
        if match:
            sections.append(Section("\n".join(lines), heading=heading))
            heading, lines = match.group(1).strip(), []
        else:
            lines.append(line)
    sections.append(Section("\n".join(lines), heading=heading))
    return sections


class _HTMLText(HTMLParser):
    HEADINGS = {"h1", "h2", "h3"}
    SKIP = {"script", "style", "noscript", "template"}

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[Section] = []
        self.heading: str | None = None
        self.lines: list[str] = []
        self.in_heading: list[str] | None = None
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.HEADINGS:
            self.in_heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.HEADINGS and self.in_heading is not None:
            self.sections.append(Section("\n".join(self.lines), heading=self.heading))
            self.heading, self.lines, self.in_heading = " ".join(self.in_heading).strip() or None, [], None
        elif tag in ("p", "li", "br", "div", "tr"):
            self.lines.append("")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.in_heading is not None:
            self.in_heading.append(data.strip())
        elif data.strip():
            self.lines.append(data.strip())


def _html(data: bytes, filename: str) -> list[Section]:
    parser = _HTMLText()
    parser.feed(decode(data, filename))
    parser.close()
    return [*parser.sections, Section("\n".join(parser.lines), heading=parser.heading)]


# A plain-text heading: one short line, blank lines around it, no sentence end, a paragraph
# below. Course notes are written so ("光合作用" over its paragraph), and the passages cut from
# that paragraph then know their topic, which their sentences rarely repeat.
_BLOCKS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"[。！？；，、.!?;,:：]$|[。！？；，]")  # ending a line, or a Chinese clause in it
HEADING_CHARS = 60


def _is_heading(block: str) -> bool:
    line = block.strip()
    return (
        0 < len(line) <= HEADING_CHARS
        and "\n" not in line
        and not _SENTENCE_END.search(line)
        and any(ch.isalpha() for ch in line)
    )


def _text(data: bytes, filename: str) -> list[Section]:
    blocks = [b for b in _BLOCKS.split(decode(data, filename)) if b.strip()]
    looks = [_is_heading(b) for b in blocks]
    sections: list[Section] = []
    heading, lines = None, []
    for block, this, below in zip(blocks, looks, [*looks[1:], True], strict=True):
        # A heading-like line over another one, or at the end, is content (a list, a poem).
        if this and not below:
            sections.append(Section("\n\n".join(lines), heading=heading))
            heading, lines = block.strip(), []
        else:
            lines.append(block)
    sections.append(Section("\n\n".join(lines), heading=heading))
    return sections
