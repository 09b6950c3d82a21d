"""Research prompt templates: YAML files with declared variables, rendered by a sandboxed Jinja.

A template file looks like::

    name: paper-summary                # slug: [a-z0-9][a-z0-9-_]*, at most 64 characters
    description: One line shown by `chatcore prompts list`.
    variables:
      paper: {description: The paper's text., required: true}
      audience: {description: Who reads the summary., default: a researcher}
    settings: {temperature: 0.3, max_new_tokens: 700}   # recommended generation settings
    system: You are ...                # optional; may use the variables too
    body: |
      Summarise for {{ audience }}: {{ paper }}

Built-in templates live in the repository's top-level ``prompts/`` folder, found relative to
this package; that works from a checkout and from the editable install ``make install`` does
(a non-editable wheel does not ship them). Users add or override templates in
``$CHATCORE_HOME/prompts/``: a user file with a built-in's name replaces the built-in.

A malformed file is skipped and reported in ``PromptLibrary.warnings``, never fatal. Template
names from users are only ever looked up in the loaded index, never joined into a path.

The sandbox stops templates from reaching Python internals; it does not bound their run time or
memory, so read a template from someone else before installing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from chatcore.core.errors import ChatCoreError

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "prompts"  # the repository's prompts/
MAX_NAME_LENGTH = 64
# A template file is a page of text; anything far larger is a mistake, not a template.
MAX_FILE_BYTES = 256 * 1024

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_VARIABLE_RE = re.compile(r"[a-z_][a-z0-9_]*")
_FILE_KEYS = {"name", "description", "variables", "settings", "system", "body"}
_VARIABLE_KEYS = {"description", "default", "required"}


class TemplateError(ChatCoreError):
    """A template is unknown, malformed, or was given missing, unknown or unsafe values."""


def _check_range(low: float | None, high: float | None, *, low_open: bool = False):
    def check(value: float) -> bool:
        if low is not None and (value <= low if low_open else value < low):
            return False
        return high is None or value <= high

    return check


# The generation settings a template may recommend: (type, range check, range in words).
SETTINGS: dict[str, tuple[type, Any, str]] = {
    "temperature": (float, _check_range(0.0, 2.0), "between 0 and 2"),
    "top_p": (float, _check_range(0.0, 1.0, low_open=True), "above 0 and at most 1"),
    "top_k": (int, _check_range(0, None), "0 (off) or more"),
    "max_new_tokens": (int, _check_range(1, None), "1 or more"),
    "repetition_penalty": (float, _check_range(0.0, None, low_open=True), "above 0"),
}

# Autoescape off: the output is a plain-text prompt, not HTML. StrictUndefined: a typo in a
# variable name fails loudly instead of rendering as an empty string.
_ENV = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a template slug: lowercase letters, digits, '-' and '_'."""
    return len(name) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(name) is not None


@dataclass(frozen=True)
class Variable:
    """One value a template takes: required, or optional with a default."""

    description: str
    default: str | None = None
    required: bool = False


@dataclass(frozen=True)
class RenderedPrompt:
    """A template filled in: the user message, the optional system prompt, recommended settings."""

    text: str
    system: str | None
    settings: dict[str, float | int]


@dataclass(frozen=True)
class Template:
    """A parsed, validated and compiled prompt template."""

    name: str
    description: str
    variables: dict[str, Variable]
    settings: dict[str, float | int]
    system: str | None
    body: str
    source: Path | None = None
    origin: str = "user"  # "builtin" or "user"
    _compiled_body: jinja2.Template = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    _compiled_system: jinja2.Template | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_yaml(cls, text: str, source: Path | None = None, origin: str = "user") -> "Template":
        """Parse and validate one template file's text; raises ``TemplateError`` if malformed."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TemplateError(f"invalid YAML: {_one_line(exc)}") from exc
        return cls.from_mapping(data, source=source, origin=origin)

    @classmethod
    def from_mapping(cls, data: Any, source: Path | None = None, origin: str = "user") -> "Template":
        """Validate an already-parsed template; raises ``TemplateError`` if malformed."""
        if not isinstance(data, dict):
            raise TemplateError("a template file must be a mapping of name, description, variables, settings, body")
        unknown = sorted(set(map(str, data)) - _FILE_KEYS)
        if unknown:
            raise TemplateError(f"unknown field(s) {_quoted(unknown)}; allowed: {', '.join(sorted(_FILE_KEYS))}")
        missing = [key for key in ("name", "description", "body") if key not in data]
        if missing:
            raise TemplateError(f"missing field(s) {_quoted(missing)}")

        name = _text_field(data, "name")
        if not is_valid_name(name):
            raise TemplateError(f"invalid name {name!r}: {_NAME_RULE}")
        description = _text_field(data, "description")
        body = _text_field(data, "body")
        system = _text_field(data, "system") if data.get("system") is not None else None
        variables = _parse_variables(data.get("variables"))
        settings = _parse_settings(data.get("settings"))

        compiled_body, used = _compile(body, "body")
        compiled_system = None
        if system is not None:
            compiled_system, used_by_system = _compile(system, "system")
            used |= used_by_system
        undeclared = sorted(used - set(variables))
        if undeclared:
            raise TemplateError(f"uses undeclared variable(s) {_quoted(undeclared)}; declare them under 'variables'")
        unused = sorted(set(variables) - used)
        if unused:
            raise TemplateError(f"declares variable(s) {_quoted(unused)} that neither body nor system uses")

        return cls(
            name=name,
            description=description,
            variables=variables,
            settings=settings,
            system=system,
            body=body,
            source=source,
            origin=origin,
            _compiled_body=compiled_body,
            _compiled_system=compiled_system,
        )

    @property
    def required(self) -> list[str]:
        """Names of the variables without a default, in declaration order."""
        return [name for name, var in self.variables.items() if var.required]

    def render(self, values: dict[str, str] | None = None) -> RenderedPrompt:
        """Fill the template with ``values`` over the defaults.

        Refuses, naming every offender at once, unknown variables and required ones left
        missing or blank; refuses unsafe operations the sandbox catches.
        """
        values = dict(values or {})
        problems = []
        unknown = sorted(set(values) - set(self.variables))
        if unknown:
            accepted = ", ".join(self.variables) or "none"
            problems.append(f"unknown variable(s) {_quoted(unknown)} (it takes: {accepted})")
        not_text = sorted(k for k, v in values.items() if k in self.variables and not isinstance(v, str))
        if not_text:
            problems.append(f"variable(s) {_quoted(not_text)} must be text")
        missing = [n for n in self.required if not (isinstance(values.get(n), str) and values[n].strip())]
        if missing:
            problems.append(f"missing required variable(s) {_quoted(missing)}")
        if problems:
            raise TemplateError(f"template '{self.name}': " + "; ".join(problems))

        context = {n: var.default for n, var in self.variables.items() if var.default is not None}
        context.update(values)
        text = self._render_part(self._compiled_body, context)
        system = self._render_part(self._compiled_system, context) if self._compiled_system else None
        return RenderedPrompt(text=text, system=system or None, settings=dict(self.settings))

    def _render_part(self, compiled: jinja2.Template, context: dict[str, str]) -> str:
        try:
            return compiled.render(context).strip()
        except SecurityError as exc:
            raise TemplateError(f"template '{self.name}' attempted an unsafe operation: {exc}") from exc
        except Exception as exc:  # noqa: BLE001  any error inside a template's own code is the template's fault
            raise TemplateError(f"template '{self.name}' failed to render: {_one_line(exc)}") from exc


@dataclass
class PromptLibrary:
    """Built-in templates overlaid with the user's, indexed by name."""

    index: dict[str, Template] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, user_dir: Path | None = None, builtin_dir: Path = BUILTIN_DIR) -> "PromptLibrary":
        """Load built-ins, then the user's folder (if given); user templates win on name clashes."""
        library = cls()
        library._load_dir(builtin_dir, origin="builtin")
        if user_dir is not None:
            library._load_dir(Path(user_dir), origin="user")
        return library

    @property
    def templates(self) -> list[Template]:
        """Every loaded template, sorted by name."""
        return [self.index[name] for name in sorted(self.index)]

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def get(self, name: str) -> Template:
        """The template called ``name``; raises ``TemplateError`` naming the available ones."""
        if not isinstance(name, str) or not is_valid_name(name):
            raise TemplateError(f"invalid template name {name!r}: {_NAME_RULE}")
        try:
            return self.index[name]
        except KeyError:
            available = ", ".join(sorted(self.index)) or "none"
            raise TemplateError(f"unknown template '{name}'; available: {available}") from None

    def _load_dir(self, folder: Path, origin: str) -> None:
        if not folder.exists():
            return
        if not folder.is_dir():
            self.warnings.append(f"{folder}: not a folder; no {origin} templates loaded")
            return
        seen: dict[str, Path] = {}
        for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
            try:
                template = _read_template(path, origin)
            except TemplateError as exc:
                self.warnings.append(f"{path}: {exc}; skipped")
                continue
            if template.name in seen:
                self.warnings.append(
                    f"{path}: template '{template.name}' is already defined by {seen[template.name].name}; skipped"
                )
                continue
            seen[template.name] = path
            self.index[template.name] = template


def user_prompts_dir(home: Path) -> Path:
    """Where a user's own templates live under ``$CHATCORE_HOME``."""
    return home / "prompts"


_NAME_RULE = (
    f"use lowercase letters, digits, '-' and '_', starting with a letter or digit, "
    f"at most {MAX_NAME_LENGTH} characters"
)


def _read_template(path: Path, origin: str) -> Template:
    if not path.is_file():
        raise TemplateError("not a regular file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise TemplateError(f"file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read: {_one_line(exc)}") from exc
    return Template.from_yaml(text, source=path, origin=origin)


def _text_field(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TemplateError(f"field '{key}' must be non-empty text")
    return value


def _parse_variables(raw: Any) -> dict[str, Variable]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TemplateError("field 'variables' must map each variable name to its description and default")
    variables = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not _VARIABLE_RE.fullmatch(name):
            raise TemplateError(f"invalid variable name {name!r}: use lowercase letters, digits and '_'")
        if name in _ENV.globals:
            raise TemplateError(f"variable name '{name}' is taken by a Jinja built-in; pick another")
        if not isinstance(spec, dict):
            raise TemplateError(f"variable '{name}' must be a mapping with 'description' and 'default' or 'required'")
        unknown = sorted(set(map(str, spec)) - _VARIABLE_KEYS)
        if unknown:
            raise TemplateError(f"variable '{name}' has unknown field(s) {_quoted(unknown)}")
        description = spec.get("description")
        if not isinstance(description, str) or not description.strip():
            raise TemplateError(f"variable '{name}' needs a 'description'")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            raise TemplateError(f"variable '{name}': 'required' must be true or false")
        default = spec.get("default")
        if required and default is not None:
            raise TemplateError(f"variable '{name}' is required, so it cannot have a default")
        if not required and default is None:
            raise TemplateError(f"variable '{name}' needs a 'default' (\"\" for empty) or 'required: true'")
        if default is not None:
            # YAML reads `5` as a number and `yes` as a boolean; numbers are fine as text, booleans
            # are nearly always an unquoted word that YAML took for true/false.
            if isinstance(default, bool) or not isinstance(default, (str, int, float)):
                raise TemplateError(f"variable '{name}': 'default' must be text (quote it)")
            default = str(default)
        variables[name] = Variable(description=description.strip(), default=default, required=required)
    return variables


def _parse_settings(raw: Any) -> dict[str, float | int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TemplateError("field 'settings' must be a mapping such as {temperature: 0.3}")
    settings: dict[str, float | int] = {}
    for key, value in raw.items():
        if key not in SETTINGS:
            raise TemplateError(f"unknown setting {key!r}; allowed: {', '.join(SETTINGS)}")
        kind, in_range, range_words = SETTINGS[key]
        # bool is an int in Python; `temperature: yes` is never meant.
        ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            raise TemplateError(f"setting '{key}' must be {'an integer' if kind is int else 'a number'}, not {value!r}")
        if not in_range(value):
            raise TemplateError(f"setting '{key}' is {value}; it must be {range_words}")
        settings[key] = kind(value)
    return settings


def _compile(source: str, part: str) -> tuple[jinja2.Template, set[str]]:
    """The compiled template and the variable names it uses (Jinja's globals aside), from one parse."""
    try:
        tree = _ENV.parse(source)
        compiled = _ENV.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"Jinja syntax error in {part} line {exc.lineno}: {exc.message}") from exc
    return compiled, jinja2.meta.find_undeclared_variables(tree) - set(_ENV.globals)


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
