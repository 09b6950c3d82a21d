"""Test sets: labeled questions (short answers or multiple choice) read from JSONL or CSV and validated row by row.

Accepted rows (JSON Lines, or a JSON array in a ``.json`` file):
``{"id", "question" | "messages", "answer" | "answers", "choices", "gold", "tags", "pages"}``, and OpenAI
evals' ``{"input", "ideal"}``. CSV/TSV: a header with ``question`` and ``answer`` columns, optional ``id``,
``tags`` and choices either in one ``choices`` column (``|`` between them) or in columns ``A``, ``B``, ...
A bad row is refused with its line number (a CSV's header is line 1) and the field at fault.
"""

from __future__ import annotations

import csv
import io
import json
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from chatcore.core.errors import ParameterError

LETTERS = string.ascii_uppercase  # choice labels: A, B, C, ...
MAX_CHOICES = 26
MAX_ITEMS = 20_000  # beyond this a run takes hours and the page's per-item view stops being readable
MAX_BYTES = 50 * 1024 * 1024  # the whole file is held in memory while it is validated
JSON_EXTENSIONS = (".jsonl", ".json")
CSV_EXTENSIONS = (".csv", ".tsv")
ACCEPTED_FORMATS = "JSON Lines (.jsonl, .json) or CSV (.csv, .tsv)"
ROLES = ("system", "user", "assistant")
CHOICE_SEPARATOR = "|"  # between choices in a CSV "choices" cell
EXAMPLE_NAME = "science-example"
EXAMPLE_FILE = "science.jsonl"
# How a multiple-choice item is asked when the model writes its answer, and read from the letter it writes.
CHOICE_INSTRUCTION = "Answer with the letter of the correct choice."


@dataclass(frozen=True)
class TestItem:
    """One labeled question: the prompt as chat messages, accepted answers, and choices with the right one."""

    __test__ = False  # pytest: a data class named Test*, not a test case

    id: str
    messages: tuple[dict[str, str], ...]  # {"role", "content"}; a plain "question" is one user message
    answers: tuple[str, ...] = ()  # accepted answers (regex patterns for the regex scorer)
    choices: tuple[str, ...] = ()  # multiple choice options, in order (labelled A, B, ...)
    gold: int | None = None  # index into choices of the right one
    tags: tuple[str, ...] = ()
    pages: tuple[dict[str, Any], ...] = field(default=())  # gold pages for retrieval: {"document", "page"}

    @property
    def question(self) -> str:
        """The last user message: what is asked."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    @property
    def multiple_choice(self) -> bool:
        return bool(self.choices)

    def prompt_messages(self) -> list[dict[str, str]]:
        """The messages a generating model gets; multiple choice lists the options as ``A. ...`` lines."""
        if not self.choices:
            return [dict(m) for m in self.messages]
        options = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(self.choices))
        *before, last = [dict(m) for m in self.messages]
        last["content"] = f"{last['content']}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
        return [*before, last]

    def loglikelihood_context(self) -> str:
        """The context each choice continues when scored by log-likelihood: lm-evaluation-harness's usual
        ``Question: ...\\nAnswer:`` (each choice follows after one space)."""
        return f"Question: {self.question}\nAnswer:"

    def to_dict(self) -> dict[str, Any]:
        """The item as stored (and as written back to JSONL)."""
        data: dict[str, Any] = {"id": self.id, "messages": [dict(m) for m in self.messages],
                                "answers": list(self.answers)}
        if self.choices:
            data["choices"], data["gold"] = list(self.choices), self.gold
        if self.tags:
            data["tags"] = list(self.tags)
        if self.pages:
            data["pages"] = [dict(p) for p in self.pages]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestItem:
        """An item from its stored dict (as ``to_dict`` wrote it; extra keys such as ``item_id`` are ignored)."""
        return cls(id=str(data["id"]), messages=tuple(dict(m) for m in data["messages"]),
                   answers=tuple(data.get("answers") or ()), choices=tuple(data.get("choices") or ()),
                   gold=data.get("gold"), tags=tuple(data.get("tags") or ()),
                   pages=tuple(dict(p) for p in data.get("pages") or ()))


@dataclass(frozen=True)
class TestSet:
    """A validated test set: its items in file order, and where they came from."""

    __test__ = False  # pytest: a data class named Test*, not a test case

    name: str
    items: tuple[TestItem, ...]
    filename: str | None = None

    @property
    def multiple_choice(self) -> int:
        """How many items are multiple choice."""
        return sum(item.multiple_choice for item in self.items)


class TestSetError(ParameterError):
    """A test set file that cannot be used: the message names the line (1-based) and the field at fault."""

    __test__ = False

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        super().__init__(field or "test_set", f"line {line}: {message}" if line else message)
        self.line = line
        self.field = field


def _bad(line: int, name: str, problem: str) -> TestSetError:
    """The error for one field of one row: ``line 7: "choices" must be ...``."""
    return TestSetError(f'"{name}" {problem}', line=line, field=name)


# --- reading files -------------------------------------------------------------------------------------------


def parse_test_set(content: bytes | str, filename: str, *, name: str | None = None) -> TestSet:
    """A validated test set from a file's content; the format is chosen by ``filename``'s extension."""
    path = Path(filename)
    extension = path.suffix.lower()
    if extension not in JSON_EXTENSIONS + CSV_EXTENSIONS:
        raise TestSetError(f"{path.name!r} is not a test set file: use {ACCEPTED_FORMATS}")
    text = _decode(content)
    if extension in JSON_EXTENSIONS:
        rows = _json_array_rows(text) if extension == ".json" and text.lstrip().startswith("[") else _jsonl_rows(text)
    else:
        rows = _csv_rows(text, delimiter="\t" if extension == ".tsv" else ",")
    items = _validated_items(rows)
    return TestSet(name=(name or "").strip() or path.stem, items=items, filename=path.name)


def load_test_set(path: str | Path, *, name: str | None = None) -> TestSet:
    """A validated test set read from a file on disk."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise TestSetError(_too_big(size))
        content = path.read_bytes()
    except OSError as exc:
        raise TestSetError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    return parse_test_set(content, path.name, name=name)


def example_test_set() -> TestSet:
    """The science questions shipped with ChatCore, named ``EXAMPLE_NAME``."""
    content = resources.files(__package__).joinpath("examples", EXAMPLE_FILE).read_bytes()
    return parse_test_set(content, EXAMPLE_FILE, name=EXAMPLE_NAME)


def write_jsonl(test_set: TestSet) -> str:
    """The set as JSON Lines, one item per line, which ``parse_test_set`` reads back to the same items."""
    return "".join(json.dumps(item.to_dict(), ensure_ascii=False) + "\n" for item in test_set.items)


def _too_big(size: int) -> str:
    return f"the file is {size / 1024 / 1024:.1f} MB; a test set may be at most {MAX_BYTES // 1024 // 1024} MB"


def _decode(content: bytes | str) -> str:
    """The file's text: UTF-8 (a byte-order mark is dropped), refused with the line of the first bad byte."""
    size = len(content) if isinstance(content, bytes) else len(content.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise TestSetError(_too_big(size))
    if isinstance(content, str):
        return content.removeprefix("\ufeff")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise TestSetError("the file is not UTF-8 text (save it as UTF-8 and upload it again)",
                           line=line) from exc


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of JSON Lines."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TestSetError(f"not valid JSON: {exc.msg} (column {exc.colno})", line=number) from exc
        rows.append((number, _object(row, number)))
        _check_count(len(rows), number)
    return rows


def _json_array_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number where it starts, object) for each element of a JSON array spanning the file."""
    decoder = json.JSONDecoder()
    rows: list[tuple[int, dict[str, Any]]] = []
    position = _skip_space(text, text.index("[") + 1)
    if position < len(text) and text[position] == "]":
        position = _skip_space(text, position + 1)
    else:
        while True:
            number = text.count("\n", 0, position) + 1
            try:
                row, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                raise TestSetError(f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
            rows.append((number, _object(row, number)))
            _check_count(len(rows), number)
            position = _skip_space(text, position)
            if text[position:position + 1] == ",":
                position = _skip_space(text, position + 1)
                continue
            if text[position:position + 1] != "]":
                raise TestSetError("not valid JSON: expected ',' or ']' after an item",
                                   line=text.count("\n", 0, position) + 1)
            position = _skip_space(text, position + 1)
            break
    if position < len(text):
        raise TestSetError("not valid JSON: extra data after the array", line=text.count("\n", 0, position) + 1)
    return rows


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _object(row: Any, line: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise TestSetError(f"each item must be a JSON object {{...}}, not {_kind(row)}", line=line)
    return row


def _check_count(count: int, line: int) -> None:
    if count > MAX_ITEMS:
        raise TestSetError(f"the test set has more than {MAX_ITEMS:,} items; split it into smaller sets", line=line)


def _kind(value: Any) -> str:
    """How a JSON value is named in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


# --- CSV ---------------------------------------------------------------------------------------------------------


def _csv_rows(text: str, *, delimiter: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number where the row starts, row as a JSON-style dict) for each non-empty row after the header."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise TestSetError("the test set is empty: the file has no header and no items")
        columns, letters = _csv_columns(header)
        rows = []
        previous_end = reader.line_num
        for cells in reader:
            number, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) > len(header):
                raise TestSetError(f"the row has {len(cells)} cells but the header has {len(header)} columns",
                                   line=number)
            rows.append((number, _csv_row(dict(zip(columns, cells)), letters, number)))
            _check_count(len(rows), number)
    except csv.Error as exc:
        raise TestSetError(f"not valid CSV: {exc}", line=reader.line_num or 1) from exc
    return rows


def _csv_columns(header: list[str]) -> tuple[list[str], list[str]]:
    """The header's column names (lower case) and its choice columns (a, b, ...), checked."""
    columns = [cell.strip().lower() for cell in header]
    for column in columns:
        if column and columns.count(column) > 1:
            raise TestSetError(f'the header names column "{column}" twice', line=1, field=column)
    for required in ("question", "answer"):
        if required not in columns:
            found = ", ".join(f'"{column}"' for column in columns if column) or "none"
            # A spreadsheet saved with semicolons reads as one column: say so rather than leave a puzzle.
            hint = "; separate columns with commas" if len(columns) == 1 and ";" in columns[0] else ""
            raise TestSetError(f'the header has no "{required}" column (its columns: {found}){hint}',
                               line=1, field=required)
    letters = [letter.lower() for letter in LETTERS if letter.lower() in columns]
    if letters and "choices" in columns:
        raise TestSetError('give choices either in a "choices" column or in columns A, B, ..., not both',
                           line=1, field="choices")
    for expected, letter in zip(LETTERS.lower(), letters):
        if expected != letter:
            raise TestSetError(f'choice columns must run A, B, C, ... without a gap: column "{expected.upper()}" '
                               "is missing", line=1, field=expected.upper())
    return columns, letters


def _csv_row(cells: dict[str, str], letters: list[str], line: int) -> dict[str, Any]:
    """One CSV row as the JSON row it stands for (empty cells are absent values)."""
    row: dict[str, Any] = {"question": cells.get("question", "")}
    for column in ("id", "answer", "tags"):
        if cells.get(column, "").strip():
            row[column] = cells[column]
    if cells.get("choices", "").strip():
        row["choices"] = [choice.strip() for choice in cells["choices"].split(CHOICE_SEPARATOR)]
    elif letters:
        choices = [cells.get(letter, "").strip() for letter in letters]
        while choices and not choices[-1]:  # rows with fewer choices than the file has columns
            choices.pop()
        if "" in choices:
            raise _bad(line, LETTERS[choices.index("")], "is empty but a later choice is given")
        if choices:
            row["choices"] = choices
    return row


# --- validating rows ---------------------------------------------------------------------------------------------


def _validated_items(rows: list[tuple[int, dict[str, Any]]]) -> tuple[TestItem, ...]:
    """Each row as a ``TestItem``; refuses an empty set and names both lines of a repeated id."""
    if not rows:
        raise TestSetError("the test set is empty: the file has no items")
    seen: dict[str, int] = {}
    items = []
    for line, row in rows:
        item = _item(row, line)
        if item.id in seen:
            raise TestSetError(f'"id" {item.id!r} is used twice: on line {seen[item.id]} and on line {line}',
                               line=line, field="id")
        seen[item.id] = line
        items.append(item)
    return tuple(items)


def _item(row: dict[str, Any], line: int) -> TestItem:
    """One validated item from one row (unknown keys are ignored)."""
    messages = _messages(row, line)
    answers = _answers(row, line)
    choices = _choices(row.get("choices"), line)
    gold = None
    if choices:
        gold = _gold(row.get("gold"), choices, answers, line)
        answers = (LETTERS[gold], choices[gold])
    elif row.get("gold") is not None:
        raise _bad(line, "gold", 'is given but the item has no "choices"')
    elif not answers:
        raise _bad(line, "answer", 'is missing: give "answer", "answers" or "ideal" (or "choices" with "gold")')
    return TestItem(id=_id(row.get("id"), line), messages=messages, answers=answers, choices=choices,
                    gold=gold, tags=_tags(row.get("tags"), line), pages=_pages(row.get("pages"), line))


def _id(value: Any, line: int) -> str:
    """The item's id; the line number where the row has none."""
    if value is None:
        return str(line)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise _bad(line, "id", f"must be a non-empty string or a whole number, not {_kind(value)}")
    return str(value).strip()


def _messages(row: dict[str, Any], line: int) -> tuple[dict[str, str], ...]:
    """The prompt: ``messages``, else ``question``, else OpenAI evals' ``input`` (a string or messages)."""
    for key in ("messages", "question", "input"):
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, str) and key != "messages":
            if not value.strip():
                raise _bad(line, key, "is empty")
            return ({"role": "user", "content": value.strip()},)
        if isinstance(value, list) and key != "question":
            return _chat(value, key, line)
        wanted = "a list of messages" if key == "messages" else (
            "a string" if key == "question" else "a string or a list of messages")
        raise _bad(line, key, f"must be {wanted}, not {_kind(value)}")
    raise _bad(line, "question", 'is missing: give "question", "messages" or "input"')


def _chat(value: list[Any], key: str, line: int) -> tuple[dict[str, str], ...]:
    """OpenAI-style chat messages, checked: known roles, string contents, the last one the user's."""
    if not value:
        raise _bad(line, key, "is an empty list")
    messages = []
    for index, message in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(message, dict):
            raise _bad(line, where, f'must be an object with "role" and "content", not {_kind(message)}')
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise _bad(line, f"{where}.role", f"must be one of {', '.join(ROLES)}, not {json.dumps(role)}")
        if not isinstance(content, str):
            raise _bad(line, f"{where}.content", f"must be a string, not {_kind(content)}")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        raise _bad(line, key, f'must end with a "user" message (the last is "{messages[-1]["role"]}")')
    if not messages[-1]["content"].strip():
        raise _bad(line, f"{key}[{len(messages) - 1}].content", "is empty")
    return tuple(messages)


def _answers(row: dict[str, Any], line: int) -> tuple[str, ...]:
    """Accepted answers from ``answer``, ``answers`` and ``ideal`` (each a string or a list of strings)."""
    answers: list[str] = []
    for key in ("answer", "answers", "ideal"):
        value = row.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not values:
            raise _bad(line, key, "is an empty list")
        for answer in values:
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
                raise _bad(line, key, f"must be a string or a list of strings, not {_kind(answer)} inside")
            text = str(answer).strip()
            if not text:
                raise _bad(line, key, "has an empty answer")
            if text not in answers:
                answers.append(text)
    return tuple(answers)


def _choices(value: Any, line: int) -> tuple[str, ...]:
    """Multiple choice options: 2 to 26 distinct non-empty strings, or none."""
    if value is None:
        return ()
    wrong = f"must be a list of at least 2 strings (at most {MAX_CHOICES})"
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_CHOICES:
        raise _bad(line, "choices", wrong)
    choices = []
    for choice in value:
        if isinstance(choice, bool) or not isinstance(choice, (str, int, float)) or not str(choice).strip():
            raise _bad(line, "choices", wrong)
        choices.append(str(choice).strip())
    repeated = next((choice for choice in choices if choices.count(choice) > 1), None)
    if repeated is not None:
        raise _bad(line, "choices", f"has {repeated!r} twice")
    return tuple(choices)


def _gold(value: Any, choices: tuple[str, ...], answers: tuple[str, ...], line: int) -> int:
    """The right choice's index: ``gold``, or the answer given as a letter or as the choice's exact text."""
    last = LETTERS[len(choices) - 1]
    if value is not None:
        if isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS[:len(choices)]:
            value = LETTERS.index(value.strip().upper())
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(choices):
            raise _bad(line, "gold", f"must be the right choice's index, 0 to {len(choices) - 1} (or a letter A "
                                     f"to {last}), not {json.dumps(value)}")
        for answer in answers:
            if answer != choices[value] and answer.upper() != LETTERS[value]:
                raise _bad(line, "answer", f"{answer!r} disagrees with \"gold\" {value} "
                                           f"({LETTERS[value]}. {choices[value]})")
        return value
    if not answers:
        raise _bad(line, "gold", 'is missing: give "gold" (the right choice\'s index) or "answer" (its letter '
                                 "or its text)")
    found = {_choice_index(answer, choices) for answer in answers}
    if None in found or len(found) > 1:
        answer = next(a for a in answers if _choice_index(a, choices) is None) if None in found else answers[0]
        problem = (f"{answer!r} is neither a letter A to {last} nor one of the choices" if None in found
                   else "names more than one choice")
        raise _bad(line, "answer", problem)
    return found.pop()  # type: ignore[return-value]


def _choice_index(answer: str, choices: tuple[str, ...]) -> int | None:
    """Which choice an answer names: its exact text first, else its letter."""
    if answer in choices:
        return choices.index(answer)
    if len(answer) == 1 and answer.upper() in LETTERS[:len(choices)]:
        return LETTERS.index(answer.upper())
    return None


def _tags(value: Any, line: int) -> tuple[str, ...]:
    """Tags from a list of strings or one comma-separated string; blanks and repeats dropped."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise _bad(line, "tags", f"must be a list of strings or a comma-separated string, not {_kind(value)}")
    return tuple(dict.fromkeys(tag.strip() for tag in value if tag.strip()))


def _pages(value: Any, line: int) -> tuple[dict[str, Any], ...]:
    """Gold pages for retrieval scoring: ``[{"document": str, "page": int >= 1}, ...]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(line, "pages", f'must be a list of {{"document", "page"}} objects, not {_kind(value)}')
    pages = []
    for index, page in enumerate(value):
        where = f"pages[{index}]"
        if not isinstance(page, dict):
            raise _bad(line, where, f'must be an object with "document" and "page", not {_kind(page)}')
        document, number = page.get("document"), page.get("page")
        if not isinstance(document, str) or not document.strip():
            raise _bad(line, f"{where}.document", "must be a document's name")
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise _bad(line, f"{where}.page", f"must be a page number (1 or more), not {json.dumps(number)}")
        pages.append({"document": document.strip(), "page": number})
    return tuple(pages)
