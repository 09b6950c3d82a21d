"""Text out of the researcher's files, page by page, with the metadata the file gives (title, authors, year, DOI).

PDF goes through pypdfium2 (PDFium, the engine of Chrome's viewer; Apache-2.0 / BSD-3): on this project's
measurements (``scripts/compare_pdf_extractors.py``, docs/library.md) it reads 15 to 30 times as many pages per
second as pypdf or pdfminer.six with the same words, joins words hyphenated at a line break, and also renders
the page images the page shows. HTML goes through BeautifulSoup (scripts and styles dropped, never rendered),
DOCX through python-docx, text in any encoding through charset-normalizer.
"""

from __future__ import annotations

import io
import re
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Callable

from chatcore.core.errors import ChatCoreError

KINDS = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
         ".html": "html", ".htm": "html", ".docx": "docx"}
MAX_FILENAME_CHARS = 255  # what most file systems allow
DOI = re.compile(r"\b(10\.\d{4,9}/[-._;()/:A-Za-z0-9]+[A-Za-z0-9])")
YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")
# Characters PDFium puts in text that are not text: a soft-hyphen marker at a line break, NULs, other controls.
_PDF_NOISE = re.compile(r"[\ufffe\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Refused(ChatCoreError):
    """A file that cannot be indexed, with the reason in words a researcher can act on."""


@dataclass
class Extracted:
    """A file's text, one string per page (one page for formats without pages), and what else it told us."""

    pages: list[str]
    extractor: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    paged: bool = True


Progress = Callable[[int, int], None]  # (pages read, pages in all)


def check_filename(name: str) -> str:
    """A plain file name, or ``Refused``: names with path parts (``../x.pdf``, ``C:\\x``) never reach the disk."""
    if not isinstance(name, str) or not name.strip():
        raise Refused("the file has no name")
    if "\x00" in name or any(ord(ch) < 32 for ch in name):
        raise Refused(f"the file name {name!r} contains control characters")
    if name != PurePosixPath(name).name or name != PureWindowsPath(name).name or name in (".", ".."):
        base = PureWindowsPath(PurePosixPath(name).name).name
        such_as = f", such as {base!r}" if base not in ("", ".", "..") else ""
        raise Refused(f"the file name {name!r} has path parts; give the file's own name{such_as}")
    if len(name) > MAX_FILENAME_CHARS:
        raise Refused(f"the file name is {len(name)} characters long; the limit is {MAX_FILENAME_CHARS}")
    return name


def kind_of(filename: str) -> str:
    """The document kind its extension names, or ``Refused`` listing what is supported."""
    suffix = PurePosixPath(filename).suffix.lower()
    if suffix not in KINDS:
        supported = ", ".join(sorted(KINDS))
        what = f"{suffix} files are" if suffix else "a file without an extension is"
        raise Refused(f"{filename}: {what} not supported (supported: {supported})")
    return KINDS[suffix]


def check_content(filename: str, kind: str, content: bytes, *, max_bytes: int) -> None:
    """Refuse empty, oversized or mislabelled files before anything is stored."""
    if not content:
        raise Refused(f"{filename} is empty (0 bytes)")
    if len(content) > max_bytes:
        raise Refused(f"{filename} is {_size(len(content))}, over the limit of {_size(max_bytes)} "
                      "(set CHATCORE_LIBRARY_MAX_MB to raise it)")
    if kind != "pdf" and content.startswith(b"%PDF-"):
        raise Refused(f"{filename} is a PDF, not {kind}; is the extension right? (rename it to .pdf)")
    if kind == "pdf" and b"%PDF-" not in content[:1024]:
        raise Refused(f"{filename} is not a PDF (it does not start with %PDF-); is the extension right?")
    if kind == "docx" and not content.startswith(b"PK\x03\x04"):
        raise Refused(f"{filename} is not a DOCX file (not a ZIP archive); is the extension right?")
    if kind in ("text", "markdown", "html") and b"\x00" in content[:8192] and not _utf16(content):
        raise Refused(f"{filename} looks binary, not {kind} (it contains NUL bytes); is the extension right?")


def extract(filename: str, kind: str, content: bytes, *, max_pages: int, progress: Progress | None = None,
            cancel: threading.Event | None = None) -> Extracted:
    """The text of ``content`` by pages; ``Refused`` for a file that has none to give."""
    if kind == "pdf":
        result = _pdf(filename, content, max_pages=max_pages, progress=progress, cancel=cancel)
    elif kind == "docx":
        result = _docx(filename, content)
    else:
        text, encoding = decode_text(filename, content)
        result = {"markdown": _markdown, "html": _html, "text": _plain}[kind](text)
        if encoding not in ("utf-8", "ascii"):
            result.warnings.append(f"read as {encoding}, not UTF-8")
    if not any(page.strip() for page in result.pages):
        raise Refused(f"{filename} has no text to index")
    return result


def decode_text(filename: str, content: bytes) -> tuple[str, str]:
    """Bytes as text: UTF-8 (a BOM allowed), else the encoding charset-normalizer finds; ``Refused`` if none fits."""
    if content.startswith(b"\xef\xbb\xbf"):
        content = content[3:]
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(content)
    best = matches.best()
    if best is None:
        raise Refused(f"{filename} is not text in any encoding ChatCore recognises; is the extension right?")
    # Short Western text fits several single-byte code pages equally well (charset-normalizer may rank cp1250
    # first and turn "naïve" into "naďve"): among the equally good guesses prefer the commonest, Windows-1252.
    tied = [m for m in matches if m.chaos <= best.chaos and m.coherence >= best.coherence]
    if any("cp1252" in m.could_be_from_charset for m in tied):
        return content.decode("cp1252"), "cp1252"
    return str(best), best.encoding


def _size(count: int) -> str:
    """A byte count in words: ``1000 bytes``, ``1.5 KiB``, ``200 MiB`` (a small limit is never shown as 0 MiB)."""
    if count < 2**10:
        return f"{count} bytes"
    if count < 2**20:
        return f"{count / 2**10:.1f} KiB"
    return f"{count / 2**20:.1f} MiB".replace(".0 MiB", " MiB")


def _utf16(content: bytes) -> bool:
    return content[:2] in (b"\xff\xfe", b"\xfe\xff")


def clean_page(text: str) -> str:
    """PDFium's page text with Unix line ends and without its markers (a soft hyphen at a break joins the word)."""
    return _PDF_NOISE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def pdf_extractor_name() -> str:
    """The PDF extractor and its version, as recorded with each document."""
    import pypdfium2.version as version

    return f"pypdfium2 {version.PYPDFIUM_INFO} (PDFium {version.PDFIUM_INFO.build})"


def open_pdf(filename: str, content: bytes) -> Any:
    """A ``pypdfium2.PdfDocument``, or ``Refused`` naming why not (encrypted, damaged)."""
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(content)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise Refused(f"{filename} is encrypted (it needs a password to open); save an unencrypted copy "
                          "and add that") from None
        reason = str(exc).removeprefix("Failed to load document").strip(" .()")  # "(PDFium: Data format error)."
        raise Refused(f"{filename} is not a readable PDF ({reason}); it may be damaged or cut short") from None


def _pdf(filename: str, content: bytes, *, max_pages: int, progress: Progress | None,
         cancel: threading.Event | None) -> Extracted:
    pdf = open_pdf(filename, content)
    try:
        count = len(pdf)
        if count > max_pages:
            raise Refused(f"{filename} has {count:,} pages, over the limit of {max_pages:,} "
                          "(set CHATCORE_LIBRARY_MAX_PAGES to raise it)")
        pages = []
        for index in range(count):
            if cancel is not None and cancel.is_set():
                raise Cancelled(filename)
            page = pdf[index]
            textpage = page.get_textpage()
            pages.append(clean_page(textpage.get_text_range()))
            textpage.close()
            page.close()
            if progress is not None:
                progress(index + 1, count)
        metadata = _pdf_metadata(pdf.get_metadata_dict(skip_empty=True), pages)
    finally:
        pdf.close()
    empty = [number for number, text in enumerate(pages, start=1) if not text.strip()]
    if len(empty) == len(pages):
        raise Refused(f"{filename} has no text layer on any of its {count} pages (a scan?); run OCR on it "
                      "(for example ocrmypdf) and add the result")
    warnings = [f"no text on {_pages_phrase(empty)} (scanned?): not indexed"] if empty else []
    return Extracted(pages, pdf_extractor_name(), metadata, warnings)


class Cancelled(ChatCoreError):
    """Indexing stopped because the user cancelled it."""


def _pages_phrase(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:20])) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")
    return ("page " if len(numbers) == 1 else "pages ") + shown


def _pdf_metadata(info: dict[str, str], pages: list[str]) -> dict[str, Any]:
    first = next((page for page in pages if page.strip()), "")
    doi = DOI.search(first[:5000])
    title = (info.get("Title") or "").strip() or _first_line(first)
    year = YEAR.search(info.get("CreationDate", "")[2:6] or "")
    return {"title": title or None, "authors": split_authors(info.get("Author", "")),
            "year": int(year.group()) if year else None, "doi": doi.group(1) if doi else None}


def split_authors(text: str) -> list[str]:
    """An author field as names: split on ``;``, `` and `` and ``&`` (commas may be inside "Last, First")."""
    parts = re.split(r"\s*(?:;|\band\b|&)\s*", text.strip())
    if len(parts) == 1 and text.count(",") > 1:  # "A. One, B. Two, C. Three"
        parts = text.split(",")
    return [part.strip() for part in parts if part.strip()]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if len(line.strip()) > 3:
            return line.strip()[:200]
    return ""


def _plain(text: str) -> Extracted:
    return Extracted([text], "text", {"title": _first_line(text) or None}, paged=False)


def _markdown(text: str) -> Extracted:
    metadata: dict[str, Any] = {}
    front = re.match(r"\A---\n(.*?)\n---\n", text, re.S)
    if front:
        import yaml

        try:
            fields = yaml.safe_load(front.group(1)) or {}
        except yaml.YAMLError:
            fields = {}
        if isinstance(fields, dict):
            authors = fields.get("authors") or fields.get("author") or []
            metadata["authors"] = [str(a) for a in authors] if isinstance(authors, list) else split_authors(str(authors))
            metadata["title"] = str(fields["title"]) if fields.get("title") else None
            year = YEAR.search(str(fields.get("year") or fields.get("date") or ""))
            metadata["year"] = int(year.group()) if year else None
            metadata["doi"] = str(fields["doi"]) if fields.get("doi") else None
    if not metadata.get("title"):
        heading = re.search(r"^#\s+(.+)$", text, re.M)
        metadata["title"] = heading.group(1).strip()[:200] if heading else _first_line(text) or None
    if not metadata.get("doi"):
        doi = DOI.search(text[:5000])
        metadata["doi"] = doi.group(1) if doi else None
    return Extracted([text], "markdown", metadata, paged=False)


def _html(text: str) -> Extracted:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    meta = {tag.get("name", "").lower(): tag.get("content", "") for tag in soup.find_all("meta") if tag.get("name")}
    authors = [tag.get("content", "") for tag in soup.find_all("meta", attrs={"name": "citation_author"})]
    for tag in soup(["script", "style", "noscript", "template", "iframe", "object", "svg"]):
        tag.decompose()
    body = re.sub(r"\n\s*\n+", "\n\n", soup.get_text("\n")).strip()
    title = meta.get("citation_title") or (soup.title.get_text(strip=True) if soup.title else "") or _first_line(body)
    year = YEAR.search(meta.get("citation_publication_date") or meta.get("citation_date") or meta.get("dc.date") or "")
    doi = meta.get("citation_doi") or (DOI.search(body[:5000]).group(1) if DOI.search(body[:5000]) else None)
    metadata = {"title": title or None, "authors": authors or split_authors(meta.get("author", "")),
                "year": int(year.group()) if year else None, "doi": doi}
    return Extracted([body], f"beautifulsoup4 {_version('beautifulsoup4')}", metadata, paged=False)


def _docx(filename: str, content: bytes) -> Extracted:
    import docx

    try:
        document = docx.Document(io.BytesIO(content))
    except Exception as exc:  # python-docx fails on damaged packages with many types (KeyError, AttributeError...)
        reason = "not a ZIP archive" if isinstance(exc, zipfile.BadZipFile) else f"{type(exc).__name__}: {exc}"
        raise Refused(f"{filename} is not a readable DOCX file ({reason})") from None
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        lines += [" | ".join(cell.text for cell in row.cells) for row in table.rows]
    text = "\n".join(lines)
    props = document.core_properties
    doi = DOI.search(text[:5000])
    metadata = {"title": props.title or _first_line(text) or None, "authors": split_authors(props.author or ""),
                "year": props.created.year if props.created else None, "doi": doi.group(1) if doi else None}
    return Extracted([text], f"python-docx {_version('python-docx')}", metadata, paged=False)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def render_page(filename: str, content: bytes, page: int, *, scale: float = 1.5) -> Any:
    """One PDF page as a PIL image (``page`` 1-based), for showing a cited passage where it stands."""
    pdf = open_pdf(filename, content)
    try:
        if not 1 <= page <= len(pdf):
            raise Refused(f"{filename} has no page {page}")
        return pdf[page - 1].render(scale=scale).to_pil()
    finally:
        pdf.close()
