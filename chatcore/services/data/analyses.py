"""Analyses without a model: group-by summaries, a correlation matrix, a two-group comparison, a regression.

Small models are weak at SQL, so these never depend on one. Each gives the same kind of answer as a question
does: the query that fetched its data (shown, editable), a result table, a chart, and a narrative built from
the numbers in that table only.

Group-by summaries and correlations are computed by DuckDB in the query itself, so they scale to any table;
the comparison and the regression read the two columns they need (at most :data:`FETCH_ROWS` rows) and
compute with scipy. Missing values are left out, and how many were is reported in ``statistics``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
from scipy import stats as scistats

from chatcore.core.errors import ParameterError
from chatcore.services.data.answers import Answer
from chatcore.services.data.charts import MAX_BARS, MAX_POINTS
from chatcore.services.data.errors import DataError
from chatcore.services.data.sandbox import Result
from chatcore.services.data.warehouse import quote_identifier

ANALYSES = ("groupby", "correlation", "compare", "regression")
PARAMS = {"groupby": ("by", "measure"), "correlation": ("columns", "method"),
          "compare": ("measure", "by", "groups"), "regression": ("x", "y")}
METHODS = ("pearson", "spearman")
MAX_GROUP_VALUES = 50  # a default group-by column has at most this many distinct values
MAX_MEASURES = 4  # default measures of a group-by summary
MAX_VARIABLES = 12  # columns of a correlation matrix
MIN_VALUES = 3  # per group (compare) or pairs (regression): fewer gives no spread to test against
FETCH_ROWS = 1_000_000  # rows a comparison or regression reads into memory (two columns: about 150 MB)
P_FLOOR = 0.001  # p-values below this are reported as "< 0.001"


# -- columns and SQL text -------------------------------------------------------------------------------------


@functools.cache
def _keywords() -> frozenset[str]:
    """DuckDB's keywords that cannot stand bare as a column name."""
    with duckdb.connect(":memory:") as connection:
        return frozenset(r[0] for r in connection.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'").fetchall())


def sql_name(name: str) -> str:
    """``name`` bare where DuckDB reads it so (what a reader would type), quoted otherwise."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in _keywords():
        return name
    return quote_identifier(name)


def sql_literal(value: Any) -> str:
    """A column value as a SQL literal (strings quoted, booleans as TRUE/FALSE)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _profile_columns(service: Any, owner: str, table: dict[str, Any]) -> list[dict[str, Any]]:
    profile = table.get("profile") or service.profile(owner, table["id"])
    return profile["columns"]


def _names(param: str, value: Any) -> list[str]:
    """One column name or several (a list, or a comma-separated string) as a list."""
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise ParameterError(param, f"{param} must be a column name or a list of column names, not {value!r}")
    if not names or not all(names):
        raise ParameterError(param, f"{param} names an empty column")
    return list(dict.fromkeys(names))


def _column(columns: list[dict[str, Any]], table: str, param: str, name: str) -> dict[str, Any]:
    """The profiled column ``name`` (exact, else the one that matches ignoring case), or a ParameterError."""
    by_name = {c["name"]: c for c in columns}
    if name in by_name:
        return by_name[name]
    folded = [c for c in columns if c["name"].lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise ParameterError(param, f"{param}: no column {name!r} in {table}; its columns are "
                                + ", ".join(c["name"] for c in columns))


def _numeric(column: dict[str, Any], param: str, purpose: str) -> dict[str, Any]:
    """``column`` if it holds numbers, else a ParameterError saying what the analysis needs."""
    if column["kind"] != "numeric":
        raise ParameterError(param, f"column {column['name']!r} is {column['kind']}; {purpose}")
    return column


def _pick(columns: list[dict[str, Any]], table: str, param: str, value: Any, purpose: str | None = None,
          *, one: bool = False) -> list[dict[str, Any]]:
    """The columns a parameter names, each numeric when ``purpose`` says why it must be."""
    names = _names(param, value)
    if one and len(names) != 1:
        raise ParameterError(param, f"{param} names one column, not {len(names)}")
    picked = [_column(columns, table, param, n) for n in names]
    return [_numeric(c, param, purpose) for c in picked] if purpose else picked


def _is_identifier(column: dict[str, Any], rows: int) -> bool:
    """A whole-number column with a different value in every row (a subject or row id): no measure to average."""
    integer = column["type"].upper() in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                                         "USMALLINT", "UINTEGER", "UBIGINT")
    return integer and rows > MIN_VALUES and column["missing"] == 0 and column["distinct"] >= rows


def _default_measures(service: Any, owner: str, table: dict[str, Any], exclude: list[str],
                      limit: int) -> list[dict[str, Any]]:
    """The numeric columns a summary or a matrix takes by default: not the groups, not row ids."""
    profile = table.get("profile") or service.profile(owner, table["id"])
    return [c for c in profile["columns"] if c["kind"] == "numeric" and c["name"] not in exclude
            and not _is_identifier(c, profile["rows"])][:limit]


def _words(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _finite(value: Any) -> float | None:
    """A float fit for JSON: NaN and infinities become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# -- numbers in words -----------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A number as a narrative writes it: whole numbers with thousands commas, others to about 3 figures."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    number = float(value)
    if not math.isfinite(number):
        return "n/a"
    if number == int(number) and abs(number) < 1e15:
        return f"{int(number):,}"
    # Two decimals from 1 up; below 1, three significant figures (0.723, 0.0452), never scientific notation.
    decimals = 2 if abs(number) >= 1 else min(12, 2 - math.floor(math.log10(abs(number))))
    text = f"{number:,.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def reported_p(p: float | None) -> str:
    """A p-value as reported: ``< 0.001`` below the floor, else its figure."""
    if p is None:
        return "n/a"
    return f"< {P_FLOOR}" if p < P_FLOOR else fmt(p)


def _p_clause(p: float | None) -> str:
    text = reported_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _statistic_rows(items: list[tuple[str, Any, str | None]]) -> Result:
    """Rows of (statistic, value, reported): ``reported`` is the text the narrative quotes."""
    rows = [[name, _finite(value), reported if reported is not None else fmt(value)] for name, value, reported in items]
    return Result(sql="", columns=[{"name": "statistic", "type": "VARCHAR"}, {"name": "value", "type": "DOUBLE"},
                                   {"name": "reported", "type": "VARCHAR"}], rows=rows)


def _fetch_all(service: Any, owner: str, table: dict[str, Any], sql: str, kind: str) -> Result:
    """Every row ``sql`` returns, past the sandbox's display limit, up to :data:`FETCH_ROWS`."""
    if (table.get("rows") or 0) > FETCH_ROWS:
        raise DataError(f"{table['name']} has {table['rows']:,} rows; a {kind} reads at most {FETCH_ROWS:,}. "
                        "Run it on a smaller table (a query can select one), or use a group-by summary")
    limits = dataclasses.replace(service.warehouse.limits, max_rows=FETCH_ROWS)
    return service.warehouse.query(owner, sql, limits=limits)


# -- group-by summaries ---------------------------------------------------------------------------------------


def _default_by(columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for column in columns:
        if column["kind"] in ("text", "boolean") and 0 < column["distinct"] <= MAX_GROUP_VALUES:
            return [column]
    raise ParameterError("by", f"no text or true/false column has at most {MAX_GROUP_VALUES} distinct values to "
                               "group by; name the column to group by (by=...)")


def _groupby_sql(table: str, by: list[str], measures: list[str]) -> tuple[str, list[str]]:
    """The summary query, and the name of each measure's mean column."""
    keys = ", ".join(sql_name(b) for b in by)
    parts, means = [keys], []
    for m in measures:
        q = sql_name(m)
        n = "n" if len(measures) == 1 else f"n_{m}"
        parts += [f"count({q}) AS {sql_name(n)}", f"avg({q}) AS {sql_name('mean_' + m)}",
                  f"stddev_samp({q}) AS {sql_name('sd_' + m)}", f"min({q}) AS {sql_name('min_' + m)}",
                  f"median({q}) AS {sql_name('median_' + m)}", f"max({q}) AS {sql_name('max_' + m)}"]
        means.append(f"mean_{m}")
    order = ", ".join(f"{sql_name(b)} NULLS LAST" for b in by)
    return (f"SELECT {', '.join(parts)}\nFROM {sql_name(table)}\nGROUP BY {keys}\nORDER BY {order}", means)


def _group_label(record: dict[str, Any], by: list[str]) -> str:
    return " / ".join("(missing)" if record[b] is None else fmt(record[b]) if isinstance(record[b], (int, float))
                      else str(record[b]) for b in by)


def _groupby_narrative(result: Result, by: list[str], measures: list[str]) -> tuple[str, dict[str, Any]]:
    records = result.records()
    sentences, extremes = [], {}
    for m in measures:
        n = "n" if len(measures) == 1 else f"n_{m}"
        present = [r for r in records if r[f"mean_{m}"] is not None]
        if not present:
            sentences.append(f"No group has a value of {m}.")
            continue
        high = max(present, key=lambda r: r[f"mean_{m}"])
        low = min(present, key=lambda r: r[f"mean_{m}"])
        extremes[m] = {"highest": _group_label(high, by), "lowest": _group_label(low, by)}
        if len(present) == 1:
            sentences.append(f"One group: {_group_label(high, by)}, mean {m} {fmt(high[f'mean_{m}'])} "
                             f"(n = {fmt(high[n])}).")
            continue
        if high[f"mean_{m}"] == low[f"mean_{m}"]:
            sentences.append(f"Every group has the same mean {m}, {fmt(high[f'mean_{m}'])}.")
            continue
        sentences.append(f"Highest mean {m}: {_group_label(high, by)}, {fmt(high[f'mean_{m}'])} (n = {fmt(high[n])}); "
                         f"lowest: {_group_label(low, by)}, {fmt(low[f'mean_{m}'])} (n = {fmt(low[n])}).")
    scope = f"Among the first {len(records):,} groups (more were left out): " if result.truncated else ""
    return scope + " ".join(sentences), extremes


def _groupby_chart(result: Result, by: list[str], means: list[str], title: str) -> dict[str, Any] | None:
    """A bar of each group's mean; several ``by`` columns are joined into one label."""
    if not result.rows or len(result.rows) > MAX_BARS:
        return None
    spec: dict[str, Any] = {"kind": "bar", "x": by[0], "y": means, "title": title}
    if len(by) > 1:
        records = result.records()
        columns = [{"name": "group", "type": "VARCHAR"}] + [c for c in result.columns if c["name"] in means]
        rows = [[_group_label(r, by)] + [r[m] for m in means] for r in records]
        spec.update(x="group", data={"columns": columns, "rows": rows})
    return spec


def groupby(service: Any, owner: str, table: dict[str, Any], *, save: bool, by: Any = None,
            measure: Any = None) -> Answer:
    """n, mean, sd, min, median and max of each measure per group, in one query."""
    columns = _profile_columns(service, owner, table)
    keys = _pick(columns, table["name"], "by", by) if by is not None else _default_by(columns)
    key_names = [c["name"] for c in keys]
    if measure is None:
        found = _default_measures(service, owner, table, key_names, MAX_MEASURES)
        if not found:
            raise ParameterError("measure", f"{table['name']} has no numeric column besides {', '.join(key_names)} "
                                            "to summarise")
    else:
        found = _pick(columns, table["name"], "measure", measure, "a group-by summary needs numeric measures")
    measures = [c["name"] for c in found]
    if overlap := set(measures) & set(key_names):
        raise ParameterError("measure", f"column {sorted(overlap)[0]!r} is both a group and a measure")
    sql, means = _groupby_sql(table["name"], key_names, measures)
    result = service.run(owner, sql)
    title = f"Mean {_words(measures)} by {_words(key_names)}"
    narrative, extremes = _groupby_narrative(result, key_names, measures)
    statistics = {"groups": len(result.rows), "truncated": result.truncated, "extremes": extremes,
                  "left_out": {c["name"]: c["missing"] for c in found}}
    return service.answer_from(owner, result, kind="groupby", question=title,
                               params={"by": key_names, "measure": measures},
                               chart=_groupby_chart(result, key_names, means, title), narrative=narrative,
                               statistics=statistics, save=save)


# -- correlation ----------------------------------------------------------------------------------------------


def _correlation_sql(table: str, names: list[str], method: str) -> str:
    """One row: the complete rows' count, then r of each pair (of average ranks for Spearman)."""
    complete = " AND ".join(f"{sql_name(n)} IS NOT NULL" for n in names)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    select = ",\n  ".join(["count(*) AS n"] + [f"corr({sql_name(a)}, {sql_name(b)}) AS "
                                                + quote_identifier(f"r({a}, {b})") for a, b in pairs])
    source = f"SELECT {', '.join(sql_name(n) for n in names)} FROM {sql_name(table)} WHERE {complete}"
    if method == "spearman":
        # Spearman's rho is Pearson's r of ranks; tied values share their average rank, as scipy ranks them.
        ranks = ", ".join(f"rank() OVER (ORDER BY {sql_name(n)}) + (count(*) OVER (PARTITION BY {sql_name(n)}) - 1)"
                          f" / 2 AS {sql_name(n)}" for n in names)
        return f"WITH complete AS ({source}),\nranked AS (SELECT {ranks} FROM complete)\nSELECT {select}\nFROM ranked"
    return f"WITH complete AS ({source})\nSELECT {select}\nFROM complete"


def correlation(service: Any, owner: str, table: dict[str, Any], *, save: bool, columns: Any = None,
                method: Any = "pearson") -> Answer:
    """The correlation matrix of numeric columns, over the rows where all of them have a value."""
    if method not in METHODS:
        raise ParameterError("method", f"method must be one of {', '.join(METHODS)}, not {method!r}")
    profiled = _profile_columns(service, owner, table)
    if columns is None:
        picked = _default_measures(service, owner, table, [], MAX_VARIABLES)
    else:
        picked = _pick(profiled, table["name"], "columns", columns, "a correlation needs numeric columns")
        if len(picked) > MAX_VARIABLES:
            raise ParameterError("columns", f"{len(picked)} columns named; a correlation matrix takes at most "
                                            f"{MAX_VARIABLES}")
    for column in picked:
        if column.get("min") is not None and column["min"] == column["max"]:
            raise ParameterError("columns", f"column {column['name']!r} is constant ({fmt(column['min'])}); "
                                            "a correlation needs columns that vary")
    names = [c["name"] for c in picked]
    if len(names) < 2:
        raise ParameterError("columns", f"a correlation needs at least two numeric columns; {table['name']} gives "
                                        f"{', '.join(names) or 'none'}")
    fetched = service.run(owner, _correlation_sql(table["name"], names, method))
    n, values = int(fetched.rows[0][0]), fetched.rows[0][1:]
    if n < MIN_VALUES:
        raise ParameterError("columns", f"only {n} rows have a value in every one of {', '.join(names)}; "
                                        f"a correlation needs at least {MIN_VALUES}")
    matrix = {a: {b: 1.0 if a == b else None for b in names} for a in names}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    for (a, b), r in zip(pairs, values):
        if r is None:  # DuckDB's corr is NaN when a column is constant over the complete rows
            raise ParameterError("columns", f"column {a!r} or {b!r} is constant over the {n:,} rows where every "
                                            "column has a value; a correlation needs columns that vary")
        matrix[a][b] = matrix[b][a] = float(r)
    return _correlation_answer(service, owner, table, fetched, names, matrix, n, method, save)


def _correlation_answer(service: Any, owner: str, table: dict[str, Any], fetched: Result, names: list[str],
                        matrix: dict[str, dict[str, float]], n: int, method: str, save: bool) -> Answer:
    rows = [[a] + [matrix[a][b] for b in names] + [n] for a in names]
    result = Result(sql=fetched.sql, columns=[{"name": "variable", "type": "VARCHAR"}]
                    + [{"name": b, "type": "DOUBLE"} for b in names] + [{"name": "n", "type": "BIGINT"}],
                    rows=rows, elapsed_s=fetched.elapsed_s)
    a, b = max(((a, b) for i, a in enumerate(names) for b in names[i + 1:]), key=lambda p: abs(matrix[p[0]][p[1]]))
    r = matrix[a][b]
    label = "Pearson's r" if method == "pearson" else "Spearman's rho"
    strength = "positive" if r > 0 else "negative" if r < 0 else "no"
    narrative = (f"The strongest correlation is between {a} and {b}: {label} = {fmt(r)}, {strength} "
                 f"(n = {fmt(n)} rows with every value present).")
    left_out = int(table.get("rows") or n) - n
    title = f"{method.title()} correlations of {_words(names)}"
    statistics = {"method": method, "n": n, "left_out": left_out, "matrix": matrix,
                  "strongest": {"x": a, "y": b, "r": r}}
    return service.answer_from(owner, result, kind="correlation", question=title,
                               params={"columns": names, "method": method},
                               chart={"kind": "heatmap", "x": "variable", "y": names, "title": title},
                               narrative=narrative, statistics=statistics, save=save)


# -- two-group comparison -------------------------------------------------------------------------------------


def _choose_groups(service: Any, owner: str, table: str, by: str, groups: Any) -> list[Any]:
    """The two values of ``by`` to compare, as the column holds them."""
    distinct = [r[0] for r in service.run(owner, f"SELECT DISTINCT {sql_name(by)} FROM {sql_name(table)} "
                                                 f"WHERE {sql_name(by)} IS NOT NULL ORDER BY 1").rows]
    more = " ..." if len(distinct) > MAX_GROUP_VALUES else ""
    shown = ", ".join(str(v) for v in distinct[:MAX_GROUP_VALUES]) + more
    if groups is None:
        if len(distinct) == 2:
            return distinct
        raise ParameterError("groups", f"column {by!r} has {len(distinct):,} values; name the two groups to compare "
                                       f"(groups=...) from: {shown}")
    wanted = [g.strip() for g in groups.split(",")] if isinstance(groups, str) else list(groups)
    if len(wanted) != 2:
        raise ParameterError("groups", f"groups names two values of {by!r}, not {len(wanted)}")
    chosen = []
    for want in wanted:
        match = [v for v in distinct if v == want or str(v).lower() == str(want).strip().lower()]
        if not match:
            raise ParameterError("groups", f"column {by!r} has no value {want!r}; its values are: {shown}")
        chosen.append(match[0])
    if chosen[0] == chosen[1]:
        raise ParameterError("groups", f"groups names {chosen[0]!r} twice; name two different values")
    return chosen


def compare_statistics(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """Welch's t-test with Cohen's d and Hedges' g, and the Mann–Whitney U test with its rank-biserial r."""
    n1, n2 = len(a), len(b)
    welch = scistats.ttest_ind(a, b, equal_var=False)
    interval = welch.confidence_interval(0.95)
    pooled = math.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    difference = float(a.mean() - b.mean())
    d = difference / pooled if pooled else None
    mann = scistats.mannwhitneyu(a, b, alternative="two-sided")
    return {"difference": difference, "ci_low": _finite(interval.low), "ci_high": _finite(interval.high),
            "t": _finite(welch.statistic), "df": _finite(welch.df), "p": _finite(welch.pvalue), "cohen_d": _finite(d),
            # Hedges' g: d with the small-sample correction J = 1 - 3 / (4 (n1 + n2) - 9).
            "hedges_g": _finite(d * (1 - 3 / (4 * (n1 + n2) - 9))) if d is not None else None,
            "u": float(mann.statistic), "mann_whitney_p": _finite(mann.pvalue),
            # Rank-biserial r: 2 U1 / (n1 n2) - 1, positive when the first group's values tend to be larger.
            "rank_biserial": float(2 * mann.statistic / (n1 * n2) - 1)}


def compare(service: Any, owner: str, table: dict[str, Any], *, save: bool, measure: Any = None, by: Any = None,
            groups: Any = None) -> Answer:
    """Two groups' values of a measure compared by Welch's t-test and the Mann–Whitney U test."""
    columns = _profile_columns(service, owner, table)
    if measure is None:
        raise ParameterError("measure", "name the numeric column to compare (measure=...)")
    m = _pick(columns, table["name"], "measure", measure, "a comparison needs a numeric measure", one=True)[0]["name"]
    key = (_pick(columns, table["name"], "by", by, one=True) if by is not None else _default_by(columns))[0]["name"]
    if key == m:
        raise ParameterError("by", f"column {m!r} is the measure; group by another column")
    chosen = _choose_groups(service, owner, table["name"], key, groups)
    sql = (f"SELECT {sql_name(key)}, {sql_name(m)}\nFROM {sql_name(table['name'])}\n"
           f"WHERE {sql_name(key)} IN ({', '.join(sql_literal(g) for g in chosen)})")
    fetched = _fetch_all(service, owner, table, sql, "comparison")
    values = {g: np.array([r[1] for r in fetched.rows if r[0] == g and r[1] is not None], dtype=float) for g in chosen}
    for g, v in values.items():
        if len(v) < MIN_VALUES:
            raise ParameterError("groups", f"group {g!r} has {len(v)} values of {m!r}; a comparison needs at least "
                                           f"{MIN_VALUES} in each group")
    a, b = (values[g] for g in chosen)
    if a.var() == 0 and b.var() == 0:
        raise ParameterError("measure", f"column {m!r} is constant within each group; there is no spread to test")
    figures = compare_statistics(a, b)
    left_out = sum(1 for r in fetched.rows if r[1] is None)
    return _compare_answer(service, owner, fetched, key, m, chosen, values, figures, left_out, save)


def _compare_narrative(m: str, names: list[str], f: dict[str, Any]) -> str:
    first, second = names
    # The size is quoted as the result holds it, signed: "13.75 higher", or "lower (difference -0.4; ...".
    d = f["difference"]
    how_much = (f"{fmt(d)} higher than" if d > 0 else "lower than" if d < 0 else "the same as")
    signed = f"difference {fmt(d)}; " if d < 0 else ""
    return (f"{first}'s mean {m} is {how_much} {second}'s ({signed}95% CI of the difference {fmt(f['ci_low'])} to "
            f"{fmt(f['ci_high'])}; Welch t = {fmt(f['t'])}, df = {fmt(f['df'])}, {_p_clause(f['p'])}; "
            f"Cohen's d = {fmt(f['cohen_d'])}, Hedges' g = {fmt(f['hedges_g'])}). In ranks, the Mann–Whitney test "
            f"gives U = {fmt(f['u'])}, {_p_clause(f['mann_whitney_p'])}, rank-biserial r = {fmt(f['rank_biserial'])}.")


def _compare_answer(service: Any, owner: str, fetched: Result, key: str, m: str, chosen: list[Any],
                    values: dict[Any, np.ndarray], f: dict[str, Any], left_out: int, save: bool) -> Answer:
    # A number or true/false alone reads badly as a group's name ("0's mean"): it gets its column's name.
    names = [f"{key} {fmt(g)}" if isinstance(g, (int, float)) else str(g) for g in chosen]
    items: list[tuple[str, Any, str | None]] = []
    per_group = {}
    for g, name in zip(chosen, names):
        v = values[g]
        per_group[name] = {"n": len(v), "mean": float(v.mean()), "sd": float(v.std(ddof=1)),
                           "median": float(np.median(v))}
        items += [(f"{stat} ({name})", value, None) for stat, value in per_group[name].items()]
    items += [(f"mean difference ({names[0]} - {names[1]})", f["difference"], None),
              ("95% CI low", f["ci_low"], None), ("95% CI high", f["ci_high"], None),
              ("Welch t", f["t"], None), ("Welch df", f["df"], None), ("Welch p", f["p"], reported_p(f["p"])),
              ("Cohen's d", f["cohen_d"], None), ("Hedges' g", f["hedges_g"], None),
              ("Mann-Whitney U", f["u"], None),
              ("Mann-Whitney p", f["mann_whitney_p"], reported_p(f["mann_whitney_p"])),
              ("rank-biserial r", f["rank_biserial"], None), ("missing values left out", left_out, None)]
    result = dataclasses.replace(_statistic_rows(items), sql=fetched.sql, elapsed_s=fetched.elapsed_s)
    title = f"{m}: {names[0]} vs {names[1]} (by {key})"
    chart = {"kind": "bar", "x": key, "y": [f"mean_{m}"], "title": title,
             "data": {"columns": [{"name": key, "type": "VARCHAR"}, {"name": f"mean_{m}", "type": "DOUBLE"}],
                      "rows": [[name, per_group[name]["mean"]] for name in names]}}
    statistics = {"groups": names, "per_group": per_group, **f, "left_out": left_out}
    return service.answer_from(owner, result, kind="compare", question=title,
                               params={"measure": m, "by": key, "groups": chosen}, chart=chart,
                               narrative=_compare_narrative(m, names, f), statistics=statistics, save=save)


# -- regression -----------------------------------------------------------------------------------------------


def regression(service: Any, owner: str, table: dict[str, Any], *, save: bool, x: Any = None,
               y: Any = None) -> Answer:
    """A simple linear regression of ``y`` on ``x`` (least squares, scipy's ``linregress``)."""
    columns = _profile_columns(service, owner, table)
    need = "a regression needs numeric x and y"
    for param, value in (("x", x), ("y", y)):
        if value is None:
            raise ParameterError(param, f"name the numeric column for {param} ({param}=...); {need}")
    xc = _pick(columns, table["name"], "x", x, need, one=True)[0]
    yc = _pick(columns, table["name"], "y", y, need, one=True)[0]
    if xc["name"] == yc["name"]:
        raise ParameterError("y", f"x and y are both {xc['name']!r}; regress one column on another")
    sql = f"SELECT {sql_name(xc['name'])}, {sql_name(yc['name'])}\nFROM {sql_name(table['name'])}"
    fetched = _fetch_all(service, owner, table, sql, "regression")
    pairs = [r for r in fetched.rows if r[0] is not None and r[1] is not None]
    if len(pairs) < MIN_VALUES:
        raise ParameterError("x", f"only {len(pairs)} rows have both {xc['name']!r} and {yc['name']!r}; "
                                  f"a regression needs at least {MIN_VALUES}")
    xs, ys = (np.array(v, dtype=float) for v in zip(*pairs))
    for param, column, v in (("x", xc, xs), ("y", yc, ys)):
        if v.min() == v.max():
            raise ParameterError(param, f"column {column['name']!r} is constant ({fmt(v[0])}); {need} that vary")
    fit = scistats.linregress(xs, ys)
    figures = {"slope": float(fit.slope), "intercept": float(fit.intercept), "r": float(fit.rvalue),
               "r_squared": float(fit.rvalue) ** 2, "p": _finite(fit.pvalue), "stderr": _finite(fit.stderr),
               "intercept_stderr": _finite(fit.intercept_stderr), "n": len(pairs),
               "left_out": len(fetched.rows) - len(pairs)}
    return _regression_answer(service, owner, fetched, xc, yc, pairs, figures, save)


def _regression_answer(service: Any, owner: str, fetched: Result, xc: dict[str, Any], yc: dict[str, Any],
                       pairs: list[list[Any]], f: dict[str, Any], save: bool) -> Answer:
    x, y = xc["name"], yc["name"]
    items: list[tuple[str, Any, str | None]] = [
        ("slope", f["slope"], None), ("intercept", f["intercept"], None), ("r", f["r"], None),
        ("r squared", f["r_squared"], None), ("p (slope)", f["p"], reported_p(f["p"])),
        ("standard error (slope)", f["stderr"], None), ("standard error (intercept)", f["intercept_stderr"], None),
        ("n", f["n"], None), ("missing values left out", f["left_out"], None)]
    result = dataclasses.replace(_statistic_rows(items), sql=fetched.sql, elapsed_s=fetched.elapsed_s)
    step = max(1, math.ceil(len(pairs) / MAX_POINTS))  # evenly spaced points, the same on every run
    types = {c["name"]: c["type"] for c in fetched.columns}
    title = f"{y} on {x} (linear regression)"
    chart = {"kind": "scatter", "x": x, "y": [y], "title": title,
             "fit": {"slope": f["slope"], "intercept": f["intercept"]},
             "data": {"columns": [{"name": n, "type": types.get(n, "DOUBLE")} for n in (x, y)],
                      "rows": pairs[::step][:MAX_POINTS]}}
    direction = "more" if f["slope"] >= 0 else "less"
    narrative = (f"Each unit of {x} goes with {fmt(abs(f['slope']))} {direction} {y} (slope {fmt(f['slope'])}, "
                 f"intercept {fmt(f['intercept'])}; r = {fmt(f['r'])}, r squared = {fmt(f['r_squared'])}, "
                 f"{_p_clause(f['p'])}, n = {fmt(f['n'])}).")
    return service.answer_from(owner, result, kind="regression", question=title, params={"x": x, "y": y},
                               chart=chart, narrative=narrative, statistics=f, save=save)


# -- entry point ----------------------------------------------------------------------------------------------

_RUN: dict[str, Callable[..., Answer]] = {"groupby": groupby, "correlation": correlation, "compare": compare,
                                          "regression": regression}


def run_analysis(service: Any, owner: str, table: dict[str, Any], kind: str, *, save: bool = True,
                 **params: Any) -> Answer:
    """Run the analysis ``kind`` on ``table`` (a ``storage.data`` row) with its ``params``."""
    if kind not in _RUN:
        raise ParameterError("kind", f"no analysis {kind!r}; choose one of {', '.join(ANALYSES)}")
    unknown = sorted(set(params) - set(PARAMS[kind]))
    if unknown:
        raise ParameterError(unknown[0], f"a {kind} takes no parameter {unknown[0]!r}; it takes "
                                         + ", ".join(PARAMS[kind]))
    return _RUN[kind](service, owner, table, save=save, **{k: v for k, v in params.items() if v is not None})
