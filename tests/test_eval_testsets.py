"""Test sets: every accepted format parsed for real, every refusal naming its line and field, the example set."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from chatcore.core.errors import ParameterError
from chatcore.services.evaluation.testsets import (
    EXAMPLE_NAME,
    MAX_BYTES,
    MAX_ITEMS,
    TestItem,
    TestSet,
    TestSetError,
    example_test_set,
    load_test_set,
    parse_test_set,
    write_jsonl,
)


def jsonl(*rows: object) -> str:
    """JSON Lines from rows (a string row is written as is, for broken lines)."""
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def refusal(content: bytes | str, filename: str = "set.jsonl") -> TestSetError:
    with pytest.raises(TestSetError) as caught:
        parse_test_set(content, filename)
    return caught.value


# --- JSON Lines ---------------------------------------------------------------------------------------------------


def test_a_question_with_one_answer_becomes_one_user_message():
    test_set = parse_test_set(jsonl({"id": "q1", "question": " What is H2O? ", "answer": "water",
                                     "tags": ["chemistry", "easy"]}), "lab.jsonl")
    assert test_set == TestSet(name="lab", filename="lab.jsonl", items=(
        TestItem(id="q1", messages=({"role": "user", "content": "What is H2O?"},), answers=("water",),
                 tags=("chemistry", "easy")),))
    assert test_set.multiple_choice == 0


def test_answers_list_aliases_and_comma_separated_tags():
    item = parse_test_set(jsonl({"id": 7, "question": "Two plus two?", "answers": ["4", "four", 4],
                                 "tags": "math, easy,,math"}), "s.jsonl").items[0]
    assert item.id == "7"
    assert item.answers == ("4", "four")  # the number 4 is the string "4" already given
    assert item.tags == ("math", "easy")


def test_messages_keep_the_conversation_and_ask_its_last_user_message():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}]
    item = parse_test_set(jsonl({"id": "c", "messages": messages, "answer": "Paris", "extra": {"x": 1}}),
                          "s.jsonl").items[0]
    assert list(item.messages) == messages
    assert item.question == "Capital of France?"


def test_openai_evals_input_and_ideal():
    rows = jsonl({"input": [{"role": "system", "content": "Answer in one word."},
                            {"role": "user", "content": "Largest planet?"}], "ideal": ["Jupiter", "jupiter"]},
                 {"input": "Red planet?", "ideal": "Mars"})
    items = parse_test_set(rows, "evals.jsonl").items
    assert [item.id for item in items] == ["1", "2"]  # no ids: each is its line number
    assert items[0].messages[0] == {"role": "system", "content": "Answer in one word."}
    assert items[0].answers == ("Jupiter", "jupiter")
    assert items[1].messages == ({"role": "user", "content": "Red planet?"},) and items[1].answers == ("Mars",)


def test_missing_ids_are_line_numbers_counting_blank_lines():
    items = parse_test_set("\n" + jsonl({"question": "a?", "answer": "a"}) + "\n  \n"
                           + jsonl({"question": "b?", "answer": "b"}), "s.jsonl").items
    assert [item.id for item in items] == ["2", "5"]


@pytest.mark.parametrize(("row", "gold"), [
    ({"gold": 2}, 2),
    ({"answer": "B"}, 1),
    ({"answer": "b"}, 1),
    ({"answer": "Mars"}, 3),
    ({"gold": 0, "answer": "A"}, 0),
    ({"gold": 3, "answers": ["D", "Mars"]}, 3),
])
def test_multiple_choice_gold_from_index_letter_or_text(row, gold):
    choices = ["Venus", "Earth", "Jupiter", "Mars"]
    item = parse_test_set(jsonl({"id": "mc", "question": "Red planet?", "choices": choices, **row}),
                          "s.jsonl").items[0]
    assert item.gold == gold
    assert item.choices == tuple(choices)
    assert item.answers == ("ABCD"[gold], choices[gold])
    assert item.multiple_choice


def test_a_json_file_may_hold_an_array_and_items_keep_their_starting_lines():
    text = '[\n  {"question": "a?", "answer": "a"},\n\n  {"question": "b?",\n   "answer": "b"}\n]\n'
    assert [item.id for item in parse_test_set(text, "set.json").items] == ["2", "4"]
    assert [item.id for item in parse_test_set(jsonl({"question": "a?", "answer": "a"}), "set.json").items] == ["1"]


def test_pages_are_kept_for_retrieval_scoring():
    item = parse_test_set(jsonl({"question": "q?", "answer": "a", "pages": [{"document": "paper.pdf", "page": 3}]}),
                          "s.jsonl").items[0]
    assert item.pages == ({"document": "paper.pdf", "page": 3},)


def test_bytes_with_a_byte_order_mark_and_an_explicit_name():
    content = "\ufeff".encode() + jsonl({"question": "Ångström?", "answer": "unit"}).encode()
    test_set = parse_test_set(content, "dir/set.JSONL", name="  my set ")
    assert test_set.name == "my set" and test_set.filename == "set.JSONL"
    assert test_set.items[0].question == "Ångström?"


# --- JSON refusals: each names its line and field ---------------------------------------------------------------

GOOD = {"question": "q?", "answer": "a"}


@pytest.mark.parametrize(("bad", "field", "words"), [
    ({"answer": "a"}, "question", '"question" is missing'),
    ({"question": "   ", "answer": "a"}, "question", '"question" is empty'),
    ({"question": ["q"], "answer": "a"}, "question", '"question" must be a string, not a list'),
    ({"messages": "hi", "answer": "a"}, "messages", '"messages" must be a list of messages'),
    ({"messages": [], "answer": "a"}, "messages", '"messages" is an empty list'),
    ({"messages": [{"role": "robot", "content": "x"}], "answer": "a"}, "messages[0].role",
     '"messages[0].role" must be one of system, user, assistant'),
    ({"messages": [{"role": "user", "content": 5}], "answer": "a"}, "messages[0].content",
     '"messages[0].content" must be a string'),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "a"},
     "messages", '"messages" must end with a "user" message'),
    ({"input": {"q": 1}, "ideal": "a"}, "input", '"input" must be a string or a list of messages'),
    ({"question": "q?"}, "answer", '"answer" is missing'),
    ({"question": "q?", "answers": []}, "answers", '"answers" is an empty list'),
    ({"question": "q?", "answer": " "}, "answer", '"answer" has an empty answer'),
    ({"question": "q?", "ideal": [{"a": 1}]}, "ideal", '"ideal" must be a string or a list of strings'),
    ({"question": "q?", "answer": "a", "choices": ["only one"]}, "choices",
     '"choices" must be a list of at least 2 strings'),
    ({"question": "q?", "answer": "A", "choices": "A|B"}, "choices", '"choices" must be a list of at least 2'),
    ({"question": "q?", "answer": "A", "choices": [str(n) for n in range(27)]}, "choices", "(at most 26)"),
    ({"question": "q?", "answer": "A", "choices": ["x", ""]}, "choices", "at least 2 strings"),
    ({"question": "q?", "answer": "A", "choices": ["x", "x"]}, "choices", "\"choices\" has 'x' twice"),
    ({"question": "q?", "choices": ["x", "y"]}, "gold", '"gold" is missing'),
    ({"question": "q?", "choices": ["x", "y"], "gold": 2}, "gold", "0 to 1 (or a letter A to B), not 2"),
    ({"question": "q?", "choices": ["x", "y"], "gold": True}, "gold", '"gold" must be'),
    ({"question": "q?", "choices": ["x", "y"], "answer": "C"}, "answer",
     "\"answer\" 'C' is neither a letter A to B nor one of the choices"),
    ({"question": "q?", "choices": ["x", "y"], "answers": ["A", "y"]}, "answer", "names more than one choice"),
    ({"question": "q?", "choices": ["x", "y"], "gold": 0, "answer": "y"}, "answer",
     "\"answer\" 'y' disagrees with \"gold\" 0 (A. x)"),
    ({"question": "q?", "answer": "a", "gold": 1}, "gold", '"gold" is given but the item has no "choices"'),
    ({"question": "q?", "answer": "a", "tags": [1, 2]}, "tags", '"tags" must be a list of strings'),
    ({"question": "q?", "answer": "a", "id": ""}, "id", '"id" must be a non-empty string or a whole number'),
    ({"question": "q?", "answer": "a", "id": 1.5}, "id", '"id" must be'),
    ({"question": "q?", "answer": "a", "pages": "p.pdf"}, "pages", '"pages" must be a list'),
    ({"question": "q?", "answer": "a", "pages": [{"document": "p.pdf", "page": 0}]}, "pages[0].page",
     '"pages[0].page" must be a page number (1 or more), not 0'),
    ({"question": "q?", "answer": "a", "pages": [{"page": 2}]}, "pages[0].document",
     '"pages[0].document" must be'),
])
def test_a_bad_row_is_refused_naming_its_line_and_field(bad, field, words):
    error = refusal(jsonl(GOOD, GOOD | {"id": "x"}, "", bad))  # the bad row is line 4 (line 3 is blank)
    assert (error.line, error.field) == (4, field)
    assert str(error).startswith("line 4: ")
    assert words in str(error)
    assert isinstance(error, ParameterError) and error.param == field


def test_the_message_reads_as_the_issue_shows_it():
    error = refusal(jsonl(*[GOOD | {"id": n} for n in range(6)], GOOD | {"choices": ["one"]}))
    assert str(error) == 'line 7: "choices" must be a list of at least 2 strings (at most 26)'


@pytest.mark.parametrize(("line", "words"), [
    ('{"question": "q?", "answer": }', "not valid JSON: Expecting value (column 30)"),
    ('["q?", "a"]', "each item must be a JSON object {...}, not a list"),
    ('"just text"', "not a string"),
])
def test_broken_and_non_object_json_lines_are_refused_with_their_line(line, words):
    error = refusal(jsonl(GOOD, line))
    assert error.line == 2 and words in str(error) and str(error).startswith("line 2: ")


def test_a_broken_json_array_names_the_line():
    error = refusal('[\n{"question": "q?", "answer": "a"},\n{"question": \n]\n', "set.json")
    assert error.line == 4 and "not valid JSON" in str(error)
    assert "extra data" in str(refusal('[{"question": "q?", "answer": "a"}] {}', "set.json"))


def test_duplicate_ids_are_refused_naming_both_lines():
    error = refusal(jsonl(GOOD | {"id": "q1"}, GOOD | {"id": "q2"}, GOOD | {"id": "q1"}))
    assert (error.line, error.field) == (3, "id")
    assert str(error) == "line 3: \"id\" 'q1' is used twice: on line 1 and on line 3"


def test_an_explicit_id_colliding_with_a_line_number_id_is_a_duplicate():
    error = refusal(jsonl(GOOD, GOOD | {"id": 1}))
    assert "on line 1 and on line 2" in str(error)


@pytest.mark.parametrize(("content", "filename"), [("", "s.jsonl"), ("\n \n", "s.jsonl"), ("[]", "s.json"),
                                                   ("question,answer\n", "s.csv"), ("", "s.csv")])
def test_an_empty_set_is_refused(content, filename):
    assert "the test set is empty" in str(refusal(content, filename))


def test_other_formats_are_refused_naming_the_accepted_ones():
    error = refusal(jsonl(GOOD), "questions.xlsx")
    assert str(error) == "'questions.xlsx' is not a test set file: use JSON Lines (.jsonl, .json) or CSV (.csv, .tsv)"
    assert error.line is None


def test_non_utf8_bytes_are_refused_with_the_line():
    error = refusal(jsonl(GOOD).encode() + '{"question": "caf\xe9?", "answer": "a"}\n'.encode("latin-1"))
    assert error.line == 2 and "not UTF-8" in str(error)


def test_too_many_items_and_too_big_files_are_refused():
    error = refusal(jsonl(*[{"question": "q?", "answer": "a"}] * (MAX_ITEMS + 1)))
    assert error.line == MAX_ITEMS + 1 and f"more than {MAX_ITEMS:,} items" in str(error)
    assert len(parse_test_set(jsonl(*[{"question": "q?", "answer": "a"}] * MAX_ITEMS), "s.jsonl").items) == MAX_ITEMS
    error = refusal(b" " * (MAX_BYTES + 1))
    assert "at most 50 MB" in str(error) and error.line is None


# --- CSV ------------------------------------------------------------------------------------------------------------


def test_csv_with_a_choices_column_and_short_answers():
    text = ('ID,Question,Answer,Choices,Tags,Notes\n'
            'q1,"Which gas, mostly, is air?",Nitrogen,Oxygen | Nitrogen | Argon,"earth, mc",ignored\n'
            'q2,How many legs does a spider have?,8,,"biology,short",\n')
    first, second = parse_test_set(text, "quiz.csv").items
    assert first == TestItem(id="q1", messages=({"role": "user", "content": "Which gas, mostly, is air?"},),
                             answers=("B", "Nitrogen"), choices=("Oxygen", "Nitrogen", "Argon"), gold=1,
                             tags=("earth", "mc"))
    assert second.answers == ("8",) and not second.choices and second.tags == ("biology", "short")


def test_csv_with_letter_columns_allows_fewer_choices_on_a_row():
    text = ("question,answer,a,b,c,d\n"
            "Largest planet?,C,Mars,Venus,Jupiter,Earth\n"
            "Is water wet?,yes,yes,no,,\n"
            "Boiling point of water in C?,100,,,,\n")
    items = parse_test_set(text, "quiz.csv").items
    assert [item.id for item in items] == ["2", "3", "4"]  # the header is line 1
    assert items[0].choices == ("Mars", "Venus", "Jupiter", "Earth") and items[0].gold == 2
    assert items[1].choices == ("yes", "no") and items[1].gold == 0
    assert items[2].answers == ("100",) and not items[2].choices


def test_tsv_and_a_quoted_cell_over_two_lines_keeps_line_numbers():
    text = 'question\tanswer\n"Line one\nline two?"\ta\nNext?\tb\n'
    items = parse_test_set(text, "quiz.tsv").items
    assert [item.id for item in items] == ["2", "4"]
    assert items[0].question == "Line one\nline two?"


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("id,question\n1,q?\n", 1, "answer", 'the header has no "answer" column (its columns: "id", "question")'),
    ("question;answer\nq?;a\n", 1, "question", "separate columns with commas"),
    ("question,answer,Question\n", 1, "question", 'names column "question" twice'),
    ("question,answer,choices,A,B\n", 1, "choices", 'either in a "choices" column or in columns A, B'),
    ("question,answer,A,B,D\n", 1, "C", 'column "C" is missing'),
    ("question,answer\nq?,a\n,b\n", 3, "question", '"question" is empty'),
    ("question,answer\nq?,a\nq?,\n", 3, "answer", '"answer" is missing'),
    ("question,answer,choices\nq?,a\nq?,A,only\n", 3, "choices", "at least 2 strings"),
    ("question,answer,A,B,C\nq?,A,x,,z\n", 2, "B", '"B" is empty but a later choice is given'),
    ("question,answer,A,B\nq?,E,x,y\n", 2, "answer", "neither a letter A to B nor one of the choices"),
    ("question,answer\nq?,a,extra\n", 2, None, "the row has 3 cells but the header has 2 columns"),
    ("id,question,answer\nk,q?,a\nk,q2?,b\n", 3, "id", "on line 2 and on line 3"),
])
def test_a_bad_csv_row_or_header_is_refused_naming_its_line_and_field(text, line, field, words):
    error = refusal(text, "quiz.csv")
    assert (error.line, error.field) == (line, field)
    assert words in str(error) and str(error).startswith(f"line {line}: ")


# --- files, round trip, the example -----------------------------------------------------------------------------


def test_load_test_set_reads_a_file_and_refuses_a_missing_one(tmp_path):
    path = tmp_path / "chem.csv"
    path.write_text("question,answer\nSymbol for gold?,Au\n", encoding="utf-8")
    test_set = load_test_set(path)
    assert (test_set.name, test_set.filename, test_set.items[0].answers) == ("chem", "chem.csv", ("Au",))
    with pytest.raises(TestSetError, match="cannot read .*missing.jsonl.*No such file"):
        load_test_set(tmp_path / "missing.jsonl")


def test_write_jsonl_round_trips_every_kind_of_item():
    source = jsonl(
        {"id": "s", "question": "Short?", "answers": ["a", "b"], "tags": "x,y"},
        {"id": "m", "messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "MC?"}],
         "choices": ["B", "A", "C"], "answer": "A", "pages": [{"document": "d.pdf", "page": 2}]},
        {"input": "Evals?", "ideal": ["yes"]})
    test_set = parse_test_set(source, "set.jsonl")
    assert test_set.items[1].gold == 1  # the exact text "A" wins over the letter A
    again = parse_test_set(write_jsonl(test_set), "set.jsonl")
    assert again.items == test_set.items
    assert write_jsonl(again) == write_jsonl(test_set)
    assert [TestItem.from_dict(item.to_dict()) for item in again.items] == list(test_set.items)


def test_the_example_set_has_both_kinds_unique_ids_and_tags_on_every_item():
    test_set = example_test_set()
    assert test_set.name == EXAMPLE_NAME == "science-example"
    items = test_set.items
    assert len(items) >= 60
    assert len({item.id for item in items}) == len(items)
    multiple_choice = [item for item in items if item.multiple_choice]
    short = [item for item in items if not item.multiple_choice]
    assert len(multiple_choice) >= 25 and len(short) >= 25
    assert {item.gold for item in multiple_choice} == {0, 1, 2, 3}  # the right choice is not always in one place
    assert all(len(item.choices) == 4 for item in multiple_choice)
    subjects = {"physics", "chemistry", "biology", "earth-science", "astronomy"}
    for item in items:
        assert len(set(item.tags) & subjects) == 1, item.id
        assert ("mc" in item.tags) == item.multiple_choice and ("short" in item.tags) != item.multiple_choice
        assert len(set(item.tags) & {"easy", "hard"}) == 1, item.id
        assert item.answers
    assert {tag for item in items for tag in item.tags} >= subjects
    assert any(len(item.answers) > 1 for item in short)  # aliases


def test_the_example_file_is_written_as_the_parser_reads_it():
    text = resources.files("chatcore.services.evaluation").joinpath("examples", "science.jsonl").read_text("utf-8")
    assert all(json.loads(line)["id"] for line in text.splitlines())
    assert parse_test_set(text, "science.jsonl").items == example_test_set().items
