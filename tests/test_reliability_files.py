"""Files: names from user text never leave their folder; the database and the model cache are never
served; servers bind to 127.0.0.1 unless told otherwise; a model's chat template renders in a sandbox.
"""

from __future__ import annotations

import inspect
import urllib.parse
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatcore.core.errors import ChatCoreError
from chatcore.core.params import GenerationParams
from chatcore.services.notes import note_filename
from chatcore.services.templates import PromptLibrary, is_valid_name
from chatcore.testing.reliability import record
from chatcore.testing.servers import free_port
from chatcore.testing.workspaces import make_workspace

HOSTILE_NAMES = [
    "../../../../etc/passwd", "..", ".", "/etc/shadow", "C:\\Windows\\system32\\evil", "..\\..\\x",
    "CON", "nul", "COM1", "LPT9.txt", "aux.md", "a/b/c", "~/.ssh/id_rsa", "name\x00.md", " ", "",
    "x" * 10_000, "é" * 1_000, "🙂" * 300, ".hidden", "-rf", "$(rm -rf ~)", "%2e%2e%2fetc", "\u202etxt.exe",
]
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def _safe(name: str) -> bool:
    stem = name.split(".")[0].lower()
    return ("/" not in name and "\\" not in name and "\x00" not in name and not name.startswith(".")
            and name not in ("", ".", "..") and len(name.encode()) <= 255 and stem not in RESERVED)


# -- names from user text ------------------------------------------------------------------------


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_note_file_names_are_always_safe(title: str) -> None:
    assert _safe(note_filename(title))


def test_web_export_names_stay_in_the_export_folder(tmp_path: Path, tiny_engine) -> None:
    workspace = make_workspace(tmp_path, tiny_engine)
    folder = tmp_path / "exports"
    tried = 0
    for title in HOSTILE_NAMES:
        cid = workspace.store.create_conversation("local", title=title or None)
        workspace.store.add_message(cid, "user", "hello")
        for fmt in ("markdown", "json"):
            path = workspace.export("local", cid, fmt, folder)
            tried += 1
            assert path.parent == folder and path.exists(), (title, path)
            assert _safe(path.name), path.name
    assert sorted(p.parent for p in folder.rglob("*")) == [folder] * tried
    record("files: export and note names", hostile_titles=len(HOSTILE_NAMES), web_exports=tried,
           escaped_folder=0, note_names_property_examples=300)


def test_notes_export_names_stay_in_their_folder(tmp_path: Path) -> None:
    from chatcore.services.notes import export_notes
    from storage import Store, notes

    store = Store(tmp_path / "db.sqlite")
    titles = [t[:200] for t in HOSTILE_NAMES if t.strip() and "\x00" not in t]  # storage refuses the rest
    for title in titles:
        notes.add_note(store, "local", title=title, body="<script>alert(1)</script>")
    folder = tmp_path / "notes"
    written = export_notes(store, "local", folder)
    assert len(written) == len(titles)
    assert all(p.parent == folder and _safe(p.name) for p in written)
    assert {p.name for p in folder.iterdir()} == {p.name for p in written}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_template_names_from_users_are_slugs_or_refused(name: str, tmp_path: Path) -> None:
    assert not is_valid_name(name) or (_safe(name + "x.yaml") and "/" not in name and not name.startswith("."))
    library = PromptLibrary.load(tmp_path / "prompts")
    with pytest.raises(ChatCoreError):
        library.get(name)


# -- what the web server serves ----------------------------------------------------------------


def test_database_and_model_cache_are_never_served(tmp_path: Path, tiny_engine, tiny_model_dir: Path) -> None:
    from chatcore.web import app, server

    workspace = make_workspace(tmp_path, tiny_engine, model=str(tiny_model_dir))
    db = workspace.store.path
    cache = workspace.manager.settings.cache
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "secret.safetensors").write_bytes(b"WEIGHTS" * 10)
    cid = workspace.store.create_conversation("local", title="secret")
    workspace.store.add_message(cid, "user", "the secret is 4242")
    demo = app.build_app(workspace)
    _, url, _ = server.launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert demo.server_name == "127.0.0.1"
        targets = [db, Path(f"{db}-wal"), cache / "secret.safetensors", tiny_model_dir / "model.safetensors",
                   tiny_model_dir / "tokenizer.json", Path("/etc/passwd")]
        attempts = 0
        with httpx.Client(base_url=url, timeout=10, follow_redirects=True) as http:
            for target in targets:
                raw = str(target)
                for spelling in (raw, urllib.parse.quote(raw), urllib.parse.quote(raw, safe=""),
                                 "../" * 12 + raw.lstrip("/"), urllib.parse.quote("../" * 12 + raw.lstrip("/"), safe="")):
                    for route in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/static/", "/assets/",
                                  "/gradio_api/static/"):
                        response = http.get(route + spelling)
                        attempts += 1
                        assert response.status_code in (400, 403, 404, 405), (route, spelling, response.status_code)
                        body = response.content
                        assert b"SQLite format 3" not in body and b"WEIGHTS" not in body and b"4242" not in body
                        assert b"root:" not in body
    finally:
        demo.close()
    record("files: Gradio file routes", targets=len(targets), requests=attempts, served=0)


def test_servers_bind_to_loopback_unless_told() -> None:
    from chatcore.api.routes import serve_api
    from chatcore.cli.serve import serve
    from chatcore.web import server

    assert inspect.signature(server.launch).parameters["host"].default == "127.0.0.1"
    assert server.parse_args([]).host == "127.0.0.1"
    assert inspect.signature(serve_api).parameters["host"].default == "127.0.0.1"
    assert {p.name: p.default for p in serve.params}["host"] == "127.0.0.1"


# -- chat templates ------------------------------------------------------------------------------

HOSTILE_TEMPLATES = {
    "class walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
    "import": "{% for m in messages %}{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch PWNED') }}{% endfor %}",
    "format string": "{{ '{0.__class__.__init__.__globals__}'.format(messages) }}",
    "attribute of a function": "{{ raise_exception.__globals__ }}",
}


@pytest.mark.parametrize("name", HOSTILE_TEMPLATES)
def test_a_hostile_chat_template_is_refused_not_run(name: str, tmp_path: Path, monkeypatch) -> None:
    from chatcore.core.settings import Settings
    from chatcore.engine.loader import load_engine
    from chatcore.testing.tiny import save_tiny, tiny_tokenizer

    directory = save_tiny(tmp_path / "model")
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = HOSTILE_TEMPLATES[name]
    tokenizer.save_pretrained(directory)
    monkeypatch.chdir(tmp_path)
    engine = load_engine(Settings(home=tmp_path / "h", cache=tmp_path / "c", model=str(directory),
                                       device="cpu", dtype="float32"))
    with pytest.raises(ChatCoreError, match="chat template"):
        list(engine.stream([{"role": "user", "content": "hi"}], GenerationParams(max_new_tokens=2)))
    assert not (tmp_path / "PWNED").exists()
