"""Documents with known text on known pages, made with fpdf2 and python-docx: the library's test fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def make_pdf(path: Path, pages: Sequence[str], *, title: str | None = None, author: str | None = None,
             password: str | None = None, blank_pages: Sequence[int] = ()) -> Path:
    """A PDF with one text per page (1-based ``blank_pages`` get an image-like rectangle and no text layer)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=False)
    if title:
        pdf.set_title(title)
    if author:
        pdf.set_author(author)
    pdf.set_creation_date(__import__("datetime").datetime(2024, 5, 1, tzinfo=__import__("datetime").timezone.utc))
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        if number in blank_pages:
            pdf.set_fill_color(90, 90, 90)
            pdf.rect(20, 20, 170, 250, style="F")  # what a scanned page looks like to a text extractor
            continue
        pdf.set_font("Helvetica", size=11)
        pdf.set_xy(15, 15)
        pdf.multi_cell(180, 5, text)
    if password:
        pdf.set_encryption(owner_password=password + "-owner", user_password=password)
    pdf.output(str(path))
    return path


def make_docx(path: Path, paragraphs: Sequence[str], *, title: str | None = None, author: str | None = None) -> Path:
    """A DOCX file with these paragraphs."""
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    if title:
        document.core_properties.title = title
    if author:
        document.core_properties.author = author
    document.save(str(path))
    return path


# Facts a retrieval test can ask about, each on its own page of a made-up report: (page text, question).
FACTS = [
    ("The Kestrel survey counted 412 breeding pairs of peregrine falcons across the northern cliffs in 2019.",
     "How many breeding pairs of peregrine falcons did the Kestrel survey count?"),
    ("Sediment cores from Lake Varna show a sharp rise in pollen from beech trees around 3200 BCE.",
     "When did beech pollen rise in the Lake Varna sediment cores?"),
    ("The catalyst Zr-MOF-808 converted 94 percent of the methanol at 250 degrees Celsius.",
     "What share of methanol did the Zr-MOF-808 catalyst convert?"),
    ("Participants who slept less than six hours recalled 23 percent fewer words in the memory task.",
     "How did short sleep affect word recall in the memory task?"),
    ("The Tideline model predicts a sea level rise of 0.61 metres by 2100 under the high emissions scenario.",
     "What sea level rise does the Tideline model predict by 2100?"),
    ("Our ablation removed the gating layer, which lowered translation BLEU from 31.2 to 27.9.",
     "What happened to BLEU when the gating layer was removed?"),
    ("The vaccine trial enrolled 1,840 adults at nine hospitals in Ghana and Kenya.",
     "How many adults did the vaccine trial enroll?"),
    ("Graphene sheets annealed in argon kept a conductivity of 5.8 kilosiemens per metre.",
     "What conductivity did graphene annealed in argon keep?"),
    ("The river Oder carried 38 tonnes of microplastic per year according to the 2021 sampling.",
     "How much microplastic did the river Oder carry per year?"),
    ("Telescope Aurora detected the exoplanet Vela-9b by its transit lasting 4.2 hours.",
     "How long was the transit of the exoplanet Vela-9b?"),
]
FILLER = ("This section reviews methods and earlier literature in general terms, describing sampling, measurement "
          "and the statistical models used across the project. ")


def fact_pages(filler_pages: int = 2) -> tuple[list[str], list[tuple[str, int]]]:
    """Pages of a report with one fact per page between filler pages, and each question with its gold page."""
    pages, gold = [], []
    for fact, question in FACTS:
        pages += [FILLER * 4] * filler_pages
        pages.append(FILLER + fact + " " + FILLER)
        gold.append((question, len(pages)))
    return pages, gold
