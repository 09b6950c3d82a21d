"""Figures from the reliability tests, for the test report (docs/reliability.md).

Set ``CHATCORE_RELIABILITY_REPORT=bench/results/reliability.json`` and run the tests: each scenario
merges its figures into that file. Unset (the default), nothing is written.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

REPORT_ENV = "CHATCORE_RELIABILITY_REPORT"


def record(scenario: str, **figures: Any) -> None:
    """Merge ``figures`` under ``scenario`` into the report file, when one is asked for."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / f"{path.name}.lock", "w") as lock:  # not next to the report
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
        report[scenario] = figures
        path.write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
