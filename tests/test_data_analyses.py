"""The model-free analyses on real DuckDB and SQLite: group-by summaries, correlations, a two-group comparison
and a regression, each checked against the experiment's known means or against numpy and scipy called
directly on the same numbers, with narratives that quote only numbers in their result and SQL that re-runs."""

from __future__ import annotations

import csv
import math
import statistics as pystats
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scistats

from chatcore.core.errors import ParameterError
from chatcore.services.data import DataError, DataService, Warehouse, analyses
from chatcore.services.data.narrative import unverified_numbers
from chatcore.testing.data import BASE, CONDITIONS, SLOPE, mean_response, trial_rows, write_trials_csv
from storage import Store
from storage.errors import NotFound

OWNER = "alice"


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def service(tmp_path):
    data = DataService(Store(tmp_path / "c.db"), Warehouse(tmp_path / "data"))
    yield data
    data.close()


@pytest.fixture
def trials(service, tmp_path):
    return service.add(OWNER, write_trials_csv(tmp_path / "trials.csv"))


@pytest.fixture
def small(service, tmp_path):
    """A table with a group of two, a constant column, a text column and missing values."""
    rows = [["a", 1, 3, 7, "p"], ["a", 2, 5, 7, "q"], ["b", 3, 7, 7, "r"], ["b", 4, "", 7, "s"],
            ["b", 5, 11, 7, "t"], ["b", 6, 13, 7, "u"], ["b", "", 15, 7, "v"]]
    return service.add(OWNER, write_csv(tmp_path / "small.csv", ["g", "x", "y", "c", "label"], rows))


def responses(condition: str) -> list[float]:
    return [r[3] for r in trial_rows() if r[1] == condition]


def by_statistic(answer) -> dict[str, float]:
    return {row[0]: row[1] for row in answer.rows}


# -- group-by -------------------------------------------------------------------------------------------------


def test_groupby_gives_the_known_means_per_condition(service, trials):
    answer = service.analyze(OWNER, "trials", "groupby", by="condition", measure="response")
    records = [dict(zip(answer.names, row)) for row in answer.rows]
    assert [r["condition"] for r in records] == list(CONDITIONS)
    for r in records:
        values = responses(r["condition"])
        assert r["mean_response"] == mean_response(r["condition"])
        assert r["n"] == len(values) == 20
        assert r["sd_response"] == pytest.approx(pystats.stdev(values), rel=1e-12)
        assert (r["min_response"], r["median_response"], r["max_response"]) == (
            min(values), pystats.median(values), max(values))
    assert answer.kind == "groupby" and answer.question == "Mean response by condition"
    assert answer.chart == {"kind": "bar", "x": "condition", "y": ["mean_response"], "title": answer.question}
    assert answer.narrative == ("Highest mean response: drug_b, 77.5 (n = 20); lowest: control, 50 (n = 20).")
    assert answer.unverified == [] and answer.statistics["left_out"] == {"response": 0}
    assert answer.tables == [{"id": trials["id"], "name": "trials", "sha256": trials["sha256"]}]


def test_groupby_defaults_group_by_the_text_column_and_leave_out_row_ids(service, trials):
    answer = service.analyze(OWNER, trials["id"], "groupby")
    assert answer.params == {"by": ["condition"], "measure": ["dose", "response", "accuracy"]}
    assert "subject" not in " ".join(answer.names)  # an id has no meaningful mean
    assert answer.chart["y"] == ["mean_dose", "mean_response", "mean_accuracy"]
    assert "Every group has the same mean dose, 17.5." in answer.narrative


def test_groupby_by_two_columns_draws_one_bar_per_combination(service, trials):
    answer = service.analyze(OWNER, "trials", "groupby", by=["condition", "dose"], measure="response")
    assert len(answer.rows) == 12
    for condition, dose, _n, mean, *_ in answer.rows:
        assert mean == BASE[condition] + SLOPE[condition] * dose
    data = answer.chart["data"]
    assert answer.chart["x"] == "group" and data["columns"][0] == {"name": "group", "type": "VARCHAR"}
    assert data["rows"][0] == ["control / 0", 50.0] and len(data["rows"]) == 12


# -- correlation ----------------------------------------------------------------------------------------------


def test_pearson_matrix_matches_numpy_and_is_symmetric_with_ones_on_the_diagonal(service, trials):
    names = ["dose", "response", "accuracy"]
    answer = service.analyze(OWNER, "trials", "correlation", columns=names)
    assert answer.names == ["variable", *names, "n"]
    matrix = np.array([row[1:4] for row in answer.rows])
    data = np.array([[r[2], r[3], r[4]] for r in trial_rows()], dtype=float)
    np.testing.assert_allclose(matrix, np.corrcoef(data, rowvar=False), rtol=1e-10)
    assert np.array_equal(matrix, matrix.T) and list(np.diag(matrix)) == [1.0, 1.0, 1.0]
    assert answer.chart == {"kind": "heatmap", "x": "variable", "y": names, "title": answer.question}
    assert answer.statistics["strongest"] == {"x": "dose", "y": "accuracy", "r": matrix[0][2]}
    assert answer.narrative.startswith("The strongest correlation is between dose and accuracy: Pearson's r = 0.953")
    assert "n = 60" in answer.narrative


def test_spearman_matrix_matches_scipy_with_tied_ranks(service, trials):
    names = ["dose", "response", "accuracy"]
    answer = service.analyze(OWNER, "trials", "correlation", columns=",".join(names), method="spearman")
    data = np.array([[r[2], r[3], r[4]] for r in trial_rows()], dtype=float)
    expected = scistats.spearmanr(data).statistic
    np.testing.assert_allclose(np.array([row[1:4] for row in answer.rows]), expected, rtol=1e-10)
    assert "Spearman's rho" in answer.narrative


def test_correlation_leaves_out_incomplete_rows_and_says_how_many(service, small):
    answer = service.analyze(OWNER, "small", "correlation", columns=["x", "y"])
    complete = [(1, 3), (2, 5), (3, 7), (5, 11), (6, 13)]
    assert answer.statistics["n"] == 5 and answer.statistics["left_out"] == 2
    expected = np.corrcoef(np.array(complete, dtype=float), rowvar=False)[0, 1]
    assert answer.rows[0][2] == pytest.approx(expected, rel=1e-12)


# -- compare --------------------------------------------------------------------------------------------------


def test_compare_matches_scipy_on_the_same_numbers(service, trials):
    answer = service.analyze(OWNER, "trials", "compare", measure="response", by="condition",
                             groups=["drug_a", "control"])
    a, b = np.array(responses("drug_a")), np.array(responses("control"))
    welch = scistats.ttest_ind(a, b, equal_var=False)
    interval = welch.confidence_interval(0.95)
    mann = scistats.mannwhitneyu(a, b, alternative="two-sided")
    pooled = math.sqrt((19 * a.var(ddof=1) + 19 * b.var(ddof=1)) / 38)
    d = (a.mean() - b.mean()) / pooled
    s = answer.statistics
    assert s["difference"] == 13.75 == mean_response("drug_a") - mean_response("control")
    assert (s["t"], s["df"], s["p"]) == pytest.approx((welch.statistic, welch.df, welch.pvalue), rel=1e-12)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((interval.low, interval.high), rel=1e-12)
    assert s["cohen_d"] == pytest.approx(d, rel=1e-12)
    assert s["hedges_g"] == pytest.approx(d * (1 - 3 / (4 * 40 - 9)), rel=1e-12)
    assert (s["u"], s["mann_whitney_p"]) == pytest.approx((mann.statistic, mann.pvalue), rel=1e-12)
    assert s["rank_biserial"] == pytest.approx(2 * mann.statistic / 400 - 1)
    table = by_statistic(answer)  # every figure is in the result rows too
    assert table["mean (drug_a)"] == 63.75 and table["n (control)"] == 20
    assert table["Welch t"] == s["t"] and table["Mann-Whitney p"] == s["mann_whitney_p"]
    assert answer.narrative.startswith("drug_a's mean response is 13.75 higher than control's")
    assert "Welch t = 7.82" in answer.narrative and "Cohen's d = 2.47" in answer.narrative
    assert answer.chart["kind"] == "bar" and answer.chart["data"]["rows"] == [["drug_a", 63.75], ["control", 50.0]]


def test_compare_reports_the_missing_values_it_left_out(service, tmp_path):
    rows = [["a", v] for v in (1, 2, 3, "")] + [["b", v] for v in (4, 6, 8, 9, "")]
    service.add(OWNER, write_csv(tmp_path / "two.csv", ["g", "v"], rows))
    answer = service.analyze(OWNER, "two", "compare", measure="v")
    assert answer.params == {"measure": "v", "by": "g", "groups": ["a", "b"]}
    assert answer.statistics["left_out"] == 2 and by_statistic(answer)["missing values left out"] == 2
    assert answer.statistics["t"] == pytest.approx(
        scistats.ttest_ind([1, 2, 3], [4, 6, 8, 9], equal_var=False).statistic, rel=1e-12)


# -- regression -----------------------------------------------------------------------------------------------


def test_regression_recovers_an_exact_line(service, tmp_path):
    rows = [[x, 2 * x + 1] for x in range(1, 11)] + [[11, ""]]
    service.add(OWNER, write_csv(tmp_path / "line.csv", ["x", "y"], rows))
    answer = service.analyze(OWNER, "line", "regression", x="x", y="y")
    s = answer.statistics
    assert (s["slope"], s["intercept"], s["n"], s["left_out"]) == (pytest.approx(2), pytest.approx(1), 10, 1)
    assert s["r"] == pytest.approx(1) and s["r_squared"] == pytest.approx(1)
    assert answer.chart["kind"] == "scatter"
    assert answer.chart["fit"] == {"slope": s["slope"], "intercept": s["intercept"]}
    assert answer.chart["data"]["rows"] == [[x, 2 * x + 1] for x in range(1, 11)]
    assert [c["name"] for c in answer.chart["data"]["columns"]] == ["x", "y"]
    assert by_statistic(answer)["slope"] == s["slope"]
    assert answer.narrative.startswith("Each unit of x goes with 2 more y (slope 2, intercept 1; r = 1")


def test_regression_matches_linregress_on_the_experiment(service, trials):
    answer = service.analyze(OWNER, "trials", "regression", x="dose", y="response")
    fit = scistats.linregress([r[2] for r in trial_rows()], [r[3] for r in trial_rows()])
    s = answer.statistics
    assert (s["slope"], s["intercept"], s["r"], s["p"], s["stderr"]) == pytest.approx(
        (fit.slope, fit.intercept, fit.rvalue, fit.pvalue, fit.stderr), rel=1e-10)
    assert len(answer.chart["data"]["rows"]) == 60


# -- every answer: narrative, SQL, record ---------------------------------------------------------------------

KINDS = [("groupby", {}), ("groupby", {"by": ["condition", "dose"], "measure": "response"}),
         ("correlation", {}), ("correlation", {"method": "spearman"}),
         ("compare", {"measure": "response", "by": "condition", "groups": "drug_a, control"}),
         ("compare", {"measure": "accuracy", "by": "dose", "groups": ["0", "40"]}),
         ("regression", {"x": "dose", "y": "response"}), ("regression", {"x": "accuracy", "y": "dose"})]


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_narratives_quote_only_numbers_in_the_result(service, trials, kind, params):
    answer = service.analyze(OWNER, "trials", kind, **params)
    assert answer.narrative and answer.unverified == []
    assert unverified_numbers(answer.narrative, answer.rows) == []
    # The check can fail: a number the result does not hold is caught.
    assert unverified_numbers(answer.narrative + " It rose by 12345.6.", answer.rows) == ["12345.6"]


def test_each_answers_sql_reruns_in_the_sandbox_and_gives_its_data(service, trials):
    groupby = service.analyze(OWNER, "trials", "groupby", by="condition", measure="response")
    assert service.query(OWNER, groupby.sql, save=False).rows == groupby.rows

    correlation = service.analyze(OWNER, "trials", "correlation", columns=["dose", "response"])
    rerun = service.query(OWNER, correlation.sql, save=False)
    assert rerun.rows == [[60, correlation.rows[0][2]]]

    compare = service.analyze(OWNER, "trials", "compare", measure="response", by="condition",
                              groups=["drug_a", "control"])
    rerun = service.query(OWNER, compare.sql, save=False)
    assert sorted(map(tuple, rerun.rows)) == sorted((r[1], r[3]) for r in trial_rows() if r[1] != "drug_b")

    regression = service.analyze(OWNER, "trials", "regression", x="dose", y="response")
    rerun = service.query(OWNER, regression.sql, save=False)
    assert sorted(map(tuple, rerun.rows)) == sorted((r[2], r[3]) for r in trial_rows())


def test_answers_are_saved_whole_unless_told_not_to(service, trials):
    saved = service.analyze(OWNER, "trials", "compare", measure="response", by="condition", groups="drug_a,control")
    again = service.answer(OWNER, saved.id)
    assert (again.kind, again.sql, again.rows, again.chart, again.statistics, again.narrative) == (
        saved.kind, saved.sql, saved.rows, saved.chart, saved.statistics, saved.narrative)
    assert again.params == {"measure": "response", "by": "condition", "groups": ["drug_a", "control"]}
    unsaved = service.analyze(OWNER, "trials", "regression", x="dose", y="response", save=False)
    assert unsaved.id is None and [a.id for a in service.answers(OWNER)] == [saved.id]
    with pytest.raises(NotFound):
        service.answer("bob", saved.id)


# -- bad parameters -------------------------------------------------------------------------------------------

BAD = [
    ("groupby", {"by": "nope"}, "by", "no column 'nope' in trials; its columns are subject, condition, dose, "
                                      "response, accuracy"),
    ("groupby", {"measure": "condition"}, "measure", "column 'condition' is text"),
    ("groupby", {"by": "condition", "measure": "condition"}, "measure", "column 'condition' is text"),
    ("groupby", {"where": "dose > 0"}, "where", "a groupby takes no parameter 'where'"),
    ("correlation", {"method": "kendall"}, "method", "method must be one of pearson, spearman"),
    ("correlation", {"columns": ["dose"]}, "columns", "at least two numeric columns"),
    ("correlation", {"columns": "condition,dose"}, "columns", "column 'condition' is text"),
    ("compare", {"by": "condition"}, "measure", "name the numeric column to compare"),
    ("compare", {"measure": "response", "by": "condition"}, "groups",
     "column 'condition' has 3 values; name the two groups to compare (groups=...) from: control, drug_a, drug_b"),
    ("compare", {"measure": "response", "by": "condition", "groups": ["drug_a", "placebo"]}, "groups",
     "column 'condition' has no value 'placebo'; its values are: control, drug_a, drug_b"),
    ("compare", {"measure": "response", "by": "condition", "groups": ["drug_a"]}, "groups", "not 1"),
    ("compare", {"measure": "response", "by": "response", "groups": ["1", "2"]}, "by", "is the measure"),
    ("regression", {"x": "condition", "y": "response"}, "x",
     "column 'condition' is text; a regression needs numeric x and y"),
    ("regression", {"x": "dose"}, "y", "name the numeric column for y"),
    ("regression", {"x": "dose", "y": "Dose"}, "y", "x and y are both 'dose'"),
    ("nonsense", {}, "kind", "no analysis 'nonsense'; choose one of groupby, correlation, compare, regression"),
]


@pytest.mark.parametrize(("kind", "params", "param", "fragment"), BAD)
def test_bad_parameters_name_the_parameter_and_the_problem(service, trials, kind, params, param, fragment):
    with pytest.raises(ParameterError) as caught:
        service.analyze(OWNER, "trials", kind, **params)
    assert caught.value.param == param and fragment in str(caught.value)
    assert service.answers(OWNER) == []  # nothing is saved for a refused analysis


SMALL_BAD = [
    ("compare", {"measure": "x", "by": "g"}, "groups",
     "group 'a' has 2 values of 'x'; a comparison needs at least 3 in each group"),
    ("regression", {"x": "c", "y": "x"}, "x", "column 'c' is constant (7)"),
    ("correlation", {"columns": ["x", "c"]}, "columns", "column 'c' is constant (7)"),
    ("groupby", {"by": "label", "measure": "x"}, None, None),  # a column of unique text is fine when named
]


@pytest.mark.parametrize(("kind", "params", "param", "fragment"), SMALL_BAD)
def test_small_groups_and_constant_columns_are_refused(service, small, kind, params, param, fragment):
    if param is None:
        assert len(service.analyze(OWNER, "small", kind, **params).rows) == 7
        return
    with pytest.raises(ParameterError) as caught:
        service.analyze(OWNER, "small", kind, **params)
    assert caught.value.param == param and fragment in str(caught.value)


def test_column_names_match_ignoring_case(service, trials):
    answer = service.analyze(OWNER, "trials", "regression", x="Dose", y="RESPONSE", save=False)
    assert answer.params == {"x": "dose", "y": "response"}


def test_a_table_too_large_to_read_is_refused_with_its_size(service, trials, monkeypatch):
    monkeypatch.setattr(analyses, "FETCH_ROWS", 50)
    with pytest.raises(DataError, match="trials has 60 rows; a regression reads at most 50"):
        service.analyze(OWNER, "trials", "regression", x="dose", y="response")
    # Group-by and correlation run inside DuckDB and have no such limit.
    assert service.analyze(OWNER, "trials", "correlation", save=False).statistics["n"] == 60


# -- isolation ------------------------------------------------------------------------------------------------


def test_another_owners_table_answers_exactly_like_a_missing_one(service, tmp_path):
    with pytest.raises(NotFound) as before:
        service.analyze(OWNER, "secret", "groupby")
    bobs = service.add("bob", write_trials_csv(tmp_path / "secret.csv"))
    with pytest.raises(NotFound) as by_name:
        service.analyze(OWNER, "secret", "groupby")
    with pytest.raises(NotFound) as by_id:
        service.analyze(OWNER, bobs["id"], "regression", x="dose", y="response")
    missing_id = bobs["id"] + 1000
    with pytest.raises(NotFound) as missing:
        service.analyze(OWNER, missing_id, "regression", x="dose", y="response")
    assert str(by_name.value) == str(before.value)
    assert str(by_id.value) == str(missing.value).replace(str(missing_id), str(bobs["id"]))
    assert service.answers(OWNER) == [] and service.analyze("bob", "secret", "groupby", save=False).rows
