"""Prompt templates: loading, validation, rendering, the sandbox, user overrides and the CLI."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from chatcore.cli import main
from chatcore.cli.prompts import parse_var_options
from chatcore.services.templates import (
    BUILTIN_DIR,
    SETTINGS,
    PromptLibrary,
    RenderedPrompt,
    Template,
    TemplateError,
)

# The issue asks for these; each maps to the built-in that covers it.
REQUIRED_TOPICS = {
    "literature review matrix": "lit-review-matrix",
    "paper summary": "paper-summary",
    "critical peer review": "peer-review",
    "research-question refinement": "research-question",
    "hypothesis generation": "hypothesis-generation",
    "experiment design": "experiment-design",
    "data-analysis plan": "analysis-plan",
    "statistics explainer": "stats-explainer",
    "code explanation and review": "code-review",
    "methods-section draft": "methods-draft",
    "cross-domain analogy": "cross-domain-analogy",
    "bias and limitations check": "bias-check",
}

BUILTIN_NAMES = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))

GOOD = """\
name: {name}
description: A test template.
variables:
  topic: {{description: The topic., required: true}}
  tone: {{description: The tone., default: dry}}
settings: {{temperature: 0.5, max_new_tokens: 100}}
system: You write about {{{{ topic }}}}.
body: "{body}"
"""


def write(folder: Path, filename: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(text, encoding="utf-8")
    return path


def good(name: str = "mine", body: str = "{{ topic }} in a {{ tone }} tone") -> str:
    return GOOD.format(name=name, body=body)


@functools.cache
def _builtin_library() -> PromptLibrary:
    return PromptLibrary.load(None)


@pytest.fixture
def builtins() -> PromptLibrary:
    return PromptLibrary.load(None)


# --- built-in templates -------------------------------------------------------------------


def test_builtins_load_without_warnings(builtins):
    assert builtins.warnings == []
    assert len(builtins.templates) >= 12
    assert [t.name for t in builtins.templates] == sorted(t.name for t in builtins.templates)


def test_builtins_cover_every_requested_topic(builtins):
    for topic, name in REQUIRED_TOPICS.items():
        assert name in builtins, topic


@pytest.mark.parametrize("path", sorted(BUILTIN_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_builtin_is_complete_and_named_after_its_file(path, builtins):
    template = builtins.get(path.stem)
    assert template.source == path and template.origin == "builtin"
    assert template.description.strip() and template.system
    assert template.required, "every built-in works on some user material"
    assert set(template.settings) >= {"temperature", "top_p", "max_new_tokens"}
    assert all(var.description for var in template.variables.values())


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_renders_with_defaults_and_with_every_value(name, builtins):
    template = builtins.get(name)
    minimal = template.render({n: f"SAMPLE-{n.upper()}" for n in template.required})
    full = template.render({n: f"SAMPLE-{n.upper()}" for n in template.variables})
    for rendered in (minimal, full):
        assert isinstance(rendered, RenderedPrompt)
        assert rendered.settings == template.settings
        assert "{{" not in rendered.text and "{%" not in rendered.text
        assert rendered.text == rendered.text.strip()
        for required in template.required:
            assert f"SAMPLE-{required.upper()}" in rendered.text + (rendered.system or "")
    for var_name, var in template.variables.items():
        if var.default:
            assert var.default in minimal.text + (minimal.system or ""), var_name
        assert f"SAMPLE-{var_name.upper()}" in full.text + (full.system or "")


# --- rendering ----------------------------------------------------------------------------


def test_render_fills_defaults_system_and_settings():
    t = Template.from_yaml(good())
    rendered = t.render({"topic": "moss"})
    assert rendered == RenderedPrompt(
        text="moss in a dry tone", system="You write about moss.", settings={"temperature": 0.5, "max_new_tokens": 100}
    )
    assert t.render({"topic": "moss", "tone": "warm"}).text == "moss in a warm tone"


def test_render_settings_are_a_copy():
    t = Template.from_yaml(good())
    t.render({"topic": "x"}).settings["temperature"] = 2.0
    assert t.settings["temperature"] == 0.5


def test_missing_required_variables_are_all_named(builtins):
    template = builtins.get("cross-domain-analogy")
    with pytest.raises(TemplateError) as info:
        template.render({"idea": "annealing"})
    message = str(info.value)
    assert "'source_field'" in message and "'target_field'" in message and "'idea'" not in message


def test_blank_required_value_counts_as_missing():
    with pytest.raises(TemplateError, match="missing required variable.*'topic'"):
        Template.from_yaml(good()).render({"topic": "   "})


def test_unknown_variables_are_refused_by_name():
    with pytest.raises(TemplateError, match="unknown variable.*'colour', 'size'.*it takes: topic, tone"):
        Template.from_yaml(good()).render({"topic": "x", "size": "1", "colour": "red"})


def test_non_text_value_is_refused():
    with pytest.raises(TemplateError, match="'topic' must be text"):
        Template.from_yaml(good()).render({"topic": 3})  # type: ignore[dict-item]


@given(st.text())
def test_values_are_inserted_verbatim_never_rendered(value):
    t = Template.from_yaml(good(body="[{{ topic }}]{{ tone }}"))
    if value.strip():
        assert t.render({"topic": value, "tone": ""}).text == f"[{value}]"


@pytest.mark.parametrize(
    "body",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ topic.__class__.__base__ }}",
        "{{ ''.format.__globals__ }}",
        "{% set x = [] %}{{ x.append(1) }}{{ topic }}",  # immutable sandbox: no mutating methods
    ],
)
def test_sandbox_refuses_unsafe_access_at_render(tmp_path, body):
    path = write(tmp_path, "evil.yaml", good(name="evil", body=body.replace('"', '\\"') + "{{ topic }}{{ tone }}"))
    library = PromptLibrary.load(tmp_path, builtin_dir=tmp_path / "none")
    assert library.warnings == [], library.warnings  # it parses; the sandbox stops it when run
    with pytest.raises(TemplateError, match="unsafe") as info:
        library.get("evil").render({"topic": "x"})
    assert "evil" in str(info.value) and path.exists()


def test_template_errors_are_chatcore_errors():
    from chatcore.core.errors import ChatCoreError

    assert issubclass(TemplateError, ChatCoreError)


def test_runtime_error_in_template_becomes_template_error(tmp_path):
    write(tmp_path, "div.yaml", good(name="div", body="{{ topic }}{{ 1 // (tone|length - tone|length) }}"))
    library = PromptLibrary.load(tmp_path, builtin_dir=tmp_path / "none")
    with pytest.raises(TemplateError, match="template 'div' failed to render"):
        library.get("div").render({"topic": "x"})


# --- user folder: overrides and malformed files -------------------------------------------


def test_user_template_is_added_and_overrides_builtin(tmp_path, builtins):
    write(tmp_path, "paper-summary.yaml", good(name="paper-summary", body="MINE {{ topic }} {{ tone }}"))
    write(tmp_path, "extra.yml", good(name="extra"))
    library = PromptLibrary.load(tmp_path)
    assert library.warnings == []
    assert len(library.templates) == len(builtins.templates) + 1
    override = library.get("paper-summary")
    assert override.origin == "user" and override.source == tmp_path / "paper-summary.yaml"
    assert override.render({"topic": "t"}).text == "MINE t dry"
    assert library.get("extra").origin == "user"


def test_missing_user_folder_is_fine(tmp_path, builtins):
    library = PromptLibrary.load(tmp_path / "does-not-exist")
    assert library.warnings == [] and len(library.templates) == len(builtins.templates)


MALFORMED = {
    "bad-yaml.yaml": ("name: [unclosed\nbody: x", "invalid YAML"),
    "not-mapping.yaml": ("- just\n- a list\n", "must be a mapping"),
    "no-body.yaml": ("name: no-body\ndescription: d\n", "missing field(s) 'body'"),
    "no-description.yaml": ("name: nd\nbody: hi\n", "missing field(s) 'description'"),
    "extra-field.yaml": (good(name="ef") + "colour: red\n", "unknown field(s) 'colour'"),
    "bad-jinja.yaml": (good(name="bj", body="{{ topic } {{ tone }}"), "Jinja syntax error"),
    "bad-block.yaml": (good(name="bb", body="{% if topic %}{{ tone }}"), "Jinja syntax error"),
    "undeclared.yaml": (good(name="und", body="{{ topic }}{{ tone }}{{ secret }}"), "undeclared variable(s) 'secret'"),
    "unused.yaml": (good(name="unu", body="{{ topic }}"), "'tone' that neither body nor system uses"),
    "bad-name.yaml": (good(name="../../etc/passwd"), "invalid name"),
    "upper-name.yaml": (good(name="Shouty"), "invalid name"),
    "long-name.yaml": (good(name="a" * 65), "invalid name"),
    "bad-setting.yaml": (good(name="bs").replace("temperature: 0.5", "temprature: 0.5"), "unknown setting 'temprature'"),
    "bad-range.yaml": (good(name="br").replace("temperature: 0.5", "temperature: 7"), "between 0 and 2"),
    "bool-setting.yaml": (good(name="bl").replace("max_new_tokens: 100", "max_new_tokens: yes"), "must be an integer"),
    "float-tokens.yaml": (good(name="ft").replace("max_new_tokens: 100", "max_new_tokens: 1.5"), "must be an integer"),
    "no-default.yaml": (good(name="nd2").replace("default: dry", "required: false"), "needs a 'default'"),
    "both.yaml": (good(name="both").replace("required: true", "required: true, default: x"), "cannot have a default"),
    "bool-default.yaml": (good(name="bd").replace("default: dry", "default: no"), "must be text"),
    "var-no-desc.yaml": (good(name="vnd").replace("description: The tone., ", ""), "'tone' needs a 'description'"),
    "bad-var-name.yaml": (good(name="bvn").replace("tone", "Tone"), "invalid variable name 'Tone'"),
    "global-var.yaml": (good(name="gv").replace("tone", "range"), "taken by a Jinja built-in"),
    "not-utf8.yaml": (None, "cannot read"),
}


def test_malformed_user_files_are_skipped_with_a_warning_naming_each(tmp_path, builtins):
    for filename, (text, _) in MALFORMED.items():
        if text is None:
            (tmp_path / filename).write_bytes(b"name: x\xff\xfe\n")
        else:
            write(tmp_path, filename, text)
    write(tmp_path, "fine.yaml", good(name="fine"))
    (tmp_path / "notes.txt").write_text("not a template, ignored")

    library = PromptLibrary.load(tmp_path)

    assert len(library.warnings) == len(MALFORMED)
    for filename, (_, reason) in MALFORMED.items():
        matching = [w for w in library.warnings if str(tmp_path / filename) in w]
        assert len(matching) == 1, filename
        assert reason in matching[0] and matching[0].endswith("skipped"), (filename, matching[0])
    assert {t.name for t in library.templates} == {t.name for t in builtins.templates} | {"fine"}


def test_malformed_override_keeps_the_builtin(tmp_path, builtins):
    write(tmp_path, "paper-summary.yaml", good(name="paper-summary", body="{{ nope }}"))
    library = PromptLibrary.load(tmp_path)
    assert len(library.warnings) == 1 and "paper-summary.yaml" in library.warnings[0]
    assert library.get("paper-summary") == builtins.get("paper-summary")


def test_duplicate_name_in_one_folder_keeps_the_first_file(tmp_path):
    write(tmp_path, "a.yaml", good(name="dup", body="A {{ topic }}{{ tone }}"))
    write(tmp_path, "b.yaml", good(name="dup", body="B {{ topic }}{{ tone }}"))
    library = PromptLibrary.load(tmp_path)
    assert library.get("dup").render({"topic": "x"}).text.startswith("A")
    assert len(library.warnings) == 1 and "b.yaml" in library.warnings[0] and "a.yaml" in library.warnings[0]


def test_oversized_file_is_skipped(tmp_path):
    write(tmp_path, "huge.yaml", good(name="huge") + "# " + "x" * 300_000 + "\n")
    library = PromptLibrary.load(tmp_path)
    assert "huge" not in library and "over the" in library.warnings[0]


def test_user_dir_that_is_a_file_is_a_warning(tmp_path):
    path = write(tmp_path, "prompts", "oops")
    library = PromptLibrary.load(path)
    assert library.warnings and str(path) in library.warnings[0]


# --- names never reach the file system ----------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../paper-summary", "paper-summary/../x", "/etc/passwd", "..", "", "a" * 65, "Paper", "a b", "-x", "x.yaml"]
)
def test_path_like_or_invalid_names_are_rejected(builtins, name):
    with pytest.raises(TemplateError, match="invalid template name"):
        builtins.get(name)


def test_unknown_name_lists_available(builtins):
    with pytest.raises(TemplateError, match="unknown template 'nope'; available: abstract-draft, .*paper-summary"):
        builtins.get("nope")


@given(st.one_of(st.sampled_from(BUILTIN_NAMES), st.text(max_size=80), st.from_regex(r"[./a-z-]{1,70}", fullmatch=True)))
def test_get_either_finds_a_loaded_template_or_raises(name):
    library = _builtin_library()
    try:
        template = library.get(name)
    except TemplateError:
        assert name not in library.index
    else:
        assert template.name == name and template.source.parent == BUILTIN_DIR


def test_a_template_file_outside_the_folder_is_never_read(tmp_path):
    # A file with a valid template next to (not inside) the user folder: no name reaches it.
    write(tmp_path, "outside.yaml", good(name="outside"))
    library = PromptLibrary.load(tmp_path / "prompts")
    for name in ("outside", "../outside", "../outside.yaml"):
        with pytest.raises(TemplateError):
            library.get(name)


# --- parse_var_options --------------------------------------------------------------------


def test_parse_var_options_splits_on_first_equals():
    assert parse_var_options(("a=1", "b=x=y", "c=", " d =  spaced ")) == {"a": "1", "b": "x=y", "c": "", "d": "  spaced "}
    assert parse_var_options(()) == {}


@pytest.mark.parametrize("pairs, message", [(("novalue",), "expected NAME=VALUE, got 'novalue'"), (("=x",), "NAME=VALUE")])
def test_parse_var_options_refuses_malformed_pairs(pairs, message):
    with pytest.raises(click.BadParameter, match=message):
        parse_var_options(pairs)


def test_parse_var_options_refuses_duplicates():
    with pytest.raises(click.BadParameter, match="'a' given more than once"):
        parse_var_options(("a=1", "b=2", "a=3"))


# --- CLI ----------------------------------------------------------------------------------




def test_cli_list_json(home, builtins):
    write(home / "prompts", "mine.yaml", good())
    write(home / "prompts", "broken.yaml", "name: [")
    result = CliRunner().invoke(main, ["prompts", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = [item["name"] for item in data]
    assert names == sorted({t.name for t in builtins.templates} | {"mine"})
    mine = data[names.index("mine")]
    assert mine == {
        "name": "mine",
        "description": "A test template.",
        "variables": [
            {"name": "topic", "description": "The topic.", "required": True, "default": None},
            {"name": "tone", "description": "The tone.", "required": False, "default": "dry"},
        ],
        "settings": {"temperature": 0.5, "max_new_tokens": 100},
        "system": "You write about {{ topic }}.",
        "origin": "user",
        "source": str(home / "prompts" / "mine.yaml"),
    }
    assert "broken.yaml" in result.stderr and "invalid YAML" in result.stderr


def test_cli_list_table(home):
    result = CliRunner().invoke(main, ["prompts", "list"])
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "abstract-draft"
    assert any(line.startswith("paper-summary ") and "Summarise one paper" in line for line in lines)


def test_cli_show(home):
    result = CliRunner().invoke(main, ["prompts", "show", "experiment-design"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("experiment-design: Design an experiment")
    assert "  hypothesis (required)" in out and '  effect_size (default: "unknown")' in out
    assert "  temperature: 0.3" in out and "\nsystem:\n" in out and "## Sample size" in out


def test_cli_show_unknown_is_a_clean_error(home):
    result = CliRunner().invoke(main, ["prompts", "show", "../../etc/passwd"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: invalid template name '../../etc/passwd'")
    assert "Traceback" not in result.output


def test_cli_render(home):
    result = CliRunner().invoke(
        main, ["prompts", "render", "stats-explainer", "--var", "concept=p = 0.03", "--var", "audience=a biologist"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[system]\nYou are a statistics teacher")
    assert "Explain this to a biologist: p = 0.03" in result.stdout


def test_cli_render_errors(home):
    runner = CliRunner()
    missing = runner.invoke(main, ["prompts", "render", "cross-domain-analogy", "--var", "x=1"])
    assert missing.exit_code == 1
    assert "unknown variable(s) 'x'" in missing.stderr and "'idea', 'source_field', 'target_field'" in missing.stderr
    malformed = runner.invoke(main, ["prompts", "render", "paper-summary", "--var", "paper"])
    assert malformed.exit_code == 2 and "expected NAME=VALUE" in malformed.stderr


def test_settings_table_names_the_documented_settings():
    assert set(SETTINGS) == {"temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty"}
