"""The researcher's library: documents in SQLite, BM25 (and optional dense) retrieval, answers that cite page and passage.

``extract`` reads files, ``chunking`` cuts pages into passages, ``retrieval`` ranks them, ``citations`` builds
grounded prompts and checks ``[n]``, and ``service.Library`` is what the front ends call.
"""

from chatcore.services.library.citations import Citation, Evidence, check_citations
from chatcore.services.library.extract import Refused
from chatcore.services.library.retrieval import ALL, Passage, Scope
from chatcore.services.library.service import AddOutcome, JobProgress, Library

__all__ = ["ALL", "AddOutcome", "Citation", "Evidence", "JobProgress", "Library", "Passage", "Refused", "Scope",
           "check_citations"]
