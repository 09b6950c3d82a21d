"""Compare PDF text extractors: pypdfium2 (what ChatCore uses), pypdf and pdfminer.six.

    .venv/bin/pip install pypdf pdfminer.six        # bench-time tools, not ChatCore dependencies
    PYTHONPATH=. .venv/bin/python scripts/compare_pdf_extractors.py [--runs 3] [--sample-page 6]

For each of the two real manuals on this machine and a 300-page PDF made of their pages, it prints pages/s
(median of ``--runs``, one process, one thread) and the characters each extractor gets; then, for one sample
page, how much of each extractor's words the others share and the first lines each one gives.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from bench.bench_library import MANUALS, build_300_page_pdf


def pypdfium2_pages(content: bytes) -> list[str]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(content)
    try:
        pages = []
        for page in pdf:
            textpage = page.get_textpage()
            pages.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return pages
    finally:
        pdf.close()


def pypdf_pages(content: bytes) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(content)).pages]


def pdfminer_pages(content: bytes) -> list[str]:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LTTextContainer

    return ["".join(element.get_text() for element in layout if isinstance(element, LTTextContainer))
            for layout in extract_pages(io.BytesIO(content))]


EXTRACTORS: dict[str, tuple[Callable[[bytes], list[str]], str, bool]] = {
    # name: (extract, licence, renders page images)
    "pypdfium2": (pypdfium2_pages, "Apache-2.0 or BSD-3-Clause (PDFium: BSD-3-Clause)", True),
    "pypdf": (pypdf_pages, "BSD-3-Clause", False),
    "pdfminer.six": (pdfminer_pages, "MIT", False),
}


def version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(package)
    except PackageNotFoundError:
        return "not installed"


def words(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


def shared(a: str, b: str) -> float:
    """The share of ``a``'s words (with repeats) that ``b`` also has."""
    wa, wb = words(a), words(b)
    return sum((wa & wb).values()) / max(1, sum(wa.values()))


def measure(files: list[Path], runs: int) -> dict[str, dict[str, list[str]]]:
    """Print the speed table; return each extractor's pages of each file."""
    texts: dict[str, dict[str, list[str]]] = {}
    print(f"| file | pages | extractor | pages/s (median of {runs}) | characters |")
    print("|---|---|---|---|---|")
    for path in files:
        content = path.read_bytes()
        for name, (extract, _, _) in EXTRACTORS.items():
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                pages = extract(content)
                times.append(time.perf_counter() - started)
            texts.setdefault(name, {})[path.name] = pages
            print(f"| {path.name} | {len(pages)} | {name} | {len(pages) / statistics.median(times):,.0f} | "
                  f"{sum(map(len, pages)):,} |", flush=True)
    return texts


def compare_page(texts: dict[str, dict[str, list[str]]], filename: str, page: int) -> None:
    """Word overlap between extractors on one page, and the start of each one's text."""
    sample = {name: pages[filename][page - 1] for name, pages in texts.items()}
    print(f"\nSample: {filename}, page {page}. Share of the row's words the column also has:\n")
    names = list(sample)
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for a in names:
        print(f"| {a} | " + " | ".join(f"{shared(sample[a], sample[b]):.1%}" for b in names) + " |")
    for name, text in sample.items():
        print(f"\n{name} ({len(text):,} characters), first lines:\n")
        print("\n".join("    " + line for line in text.strip().splitlines()[:8]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample-page", type=int, default=6, help="page of libtasn1.pdf compared word by word")
    args = parser.parse_args(argv)
    missing = [str(p) for p in MANUALS if not p.is_file()]
    if missing:
        print(f"the real manuals are not on this machine: {', '.join(missing)}", file=sys.stderr)
        return 1
    for name, (_, licence, renders) in EXTRACTORS.items():
        package = {"pdfminer.six": "pdfminer.six"}.get(name, name)
        print(f"- {name} {version(package)}: {licence}; renders page images: {'yes' if renders else 'no'}")
    print()
    with tempfile.TemporaryDirectory() as tmp:
        files = [*MANUALS, build_300_page_pdf(Path(tmp) / "manuals-300.pdf")]
        texts = measure(files, args.runs)
    compare_page(texts, MANUALS[0].name, args.sample_page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
