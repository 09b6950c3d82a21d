"""kill -9 of the API server during streamed answers, and of imports and exports midway.

The rounds live in ``bench/soak.py``, which runs many more of them; here five kills during answers
and three each during imports and exports. After each kill, before anything else opens the file:
``PRAGMA integrity_check`` is ok, every message committed earlier is there exactly once, the
interrupted question is saved and its partial answer is marked incomplete; the next start is clean.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak
from chatcore.testing.reliability import record


@pytest.fixture(scope="module")
def endless_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return soak.save_endless_tiny(tmp_path_factory.mktemp("endless-model"))


def test_five_kill_9_during_streamed_answers_lose_nothing(endless_model_dir: Path, tmp_path: Path) -> None:
    figures = soak.kill_rounds(tmp_path, endless_model_dir, kills=5, seed=8)
    assert figures.kills == 5
    assert figures.integrity == ["ok"] * 5
    assert figures.rows_lost == 0 and figures.rows_duplicated == 0
    assert figures.rows_checked >= 5 * 4  # each round re-checks every earlier exchange
    record("crash: kill -9 during streamed answers", **figures.as_dict())


def test_kill_9_during_import_and_export_leaves_all_or_nothing(endless_model_dir: Path, tmp_path: Path) -> None:
    imports = soak.import_kill_rounds(tmp_path, endless_model_dir, 3, conversations=600, seed=3)
    exports = soak.export_kill_rounds(tmp_path, endless_model_dir, 3, seed=3)
    assert imports.partial_states == 0 and imports.integrity_ok == 3
    assert exports.partial_states == 0 and exports.integrity_ok == 3
    record("crash: kill -9 during import", **imports.as_dict())
    record("crash: kill -9 during export", **exports.as_dict())
