"""The report's and the arena's statistics against values worked out by hand: McNemar's test, bootstrap
intervals of a mean, Bradley-Terry scores on Chatbot Arena's scale, and the leaderboard's intervals."""

from __future__ import annotations

import math

import pytest

from chatcore.core.errors import ParameterError
from chatcore.services.evaluation.stats import (
    Interval,
    McNemar,
    bootstrap_interval,
    bradley_terry,
    bt_leaderboard,
    mcnemar,
)


def pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Two models' correctness over the same items, from the four cells of McNemar's table."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


# ---- McNemar ----------------------------------------------------------------------------------------------

def test_mcnemar_exact_by_hand():
    # 10 discordant pairs, 2 one way: P(X <= 2) for Binomial(10, 1/2) = (1 + 10 + 45) / 1024; two-sided doubles it.
    assert mcnemar(*pairs(30, 8, 2, 5)) == McNemar(b01=2, b10=8, statistic=2.0, p_value=112 / 1024, exact=True)
    # All 6 one way: 2 * (1/2)^6.
    assert mcnemar(*pairs(0, 0, 6, 0)).p_value == 2 / 64


def test_mcnemar_chi_square_with_continuity_correction_by_hand():
    # 35 discordant pairs: (|25 - 10| - 1)^2 / 35 = 5.6; P(chi-square 1 df > 5.6) = 0.017960 (from the table).
    result = mcnemar(*pairs(40, 25, 10, 3))
    assert (result.b01, result.b10, result.exact) == (10, 25, False)
    assert result.statistic == pytest.approx(5.6)
    assert result.p_value == pytest.approx(0.017960, abs=1e-6)
    # The switch: under 25 discordant pairs the exact test, at 25 the chi-square.
    assert mcnemar(*pairs(0, 12, 12, 0)).exact and not mcnemar(*pairs(0, 13, 12, 0)).exact
    assert mcnemar(*pairs(0, 13, 12, 0)).statistic == 0.0 and mcnemar(*pairs(0, 13, 12, 0)).p_value == 1.0


def test_mcnemar_identical_results_and_bad_input():
    assert mcnemar(*pairs(7, 0, 0, 3)) == McNemar(0, 0, 0.0, 1.0, True)
    assert mcnemar([], []).p_value == 1.0
    assert mcnemar(*pairs(0, 1, 0, 0)).p_value == 1.0  # one discordant pair proves nothing
    with pytest.raises(ParameterError, match="got 3 and 2 results"):
        mcnemar([True, False, True], [True, False])


# ---- bootstrap ----------------------------------------------------------------------------------------------

def test_bootstrap_covers_the_mean_and_shrinks_with_n():
    small = bootstrap_interval([1.0, 0.0] * 10)
    large = bootstrap_interval([1.0, 0.0] * 200)
    for interval in (small, large):
        assert interval.low < interval.mean == 0.5 < interval.high
    assert (large.high - large.low) < (small.high - small.low) / 3  # about sqrt(20) narrower
    assert (small.n, large.n) == (20, 400)
    # Against the normal approximation: 1.96 * sqrt(0.25 / 400) = 0.049 each side.
    assert large.high - large.low == pytest.approx(2 * 0.049, abs=0.01)


def test_bootstrap_is_deterministic_with_its_seed():
    values = [0.1, 0.9, 0.4, 1.0, 0.0, 0.3, 0.7]
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) != bootstrap_interval(values, seed=4)
    wider = bootstrap_interval(values, confidence=0.99)
    narrower = bootstrap_interval(values, confidence=0.8)
    assert wider.low < narrower.low and narrower.high < wider.high


def test_bootstrap_edge_cases():
    empty = bootstrap_interval([])
    assert empty.n == 0 and all(math.isnan(x) for x in (empty.mean, empty.low, empty.high))
    assert bootstrap_interval([0.75]) == Interval(0.75, 0.75, 0.75, 1)
    assert bootstrap_interval([1.0] * 50) == Interval(1.0, 1.0, 1.0, 50)
    # Many values: resampled in chunks, with the same answer as any run with this seed.
    big = [float(i % 3 == 0) for i in range(5000)]
    assert bootstrap_interval(big, resamples=500) == bootstrap_interval(big, resamples=500)
    with pytest.raises(ParameterError, match="confidence"):
        bootstrap_interval([1.0], confidence=95)
    with pytest.raises(ParameterError, match="resamples"):
        bootstrap_interval([1.0], resamples=0)
    with pytest.raises(ParameterError, match="finite"):
        bootstrap_interval([1.0, math.nan])


# ---- Bradley-Terry ----------------------------------------------------------------------------------------

def test_bradley_terry_on_arenas_scale_by_hand():
    # A wins 3 of 4: the odds 3:1 are 400 * log10(3) = 190.8 points apart, around a mean of 1000.
    scores = bradley_terry([("A", "B", "a")] * 3 + [("B", "A", "a")])
    assert scores["A"] - scores["B"] == pytest.approx(400 * math.log10(3), abs=0.5)
    assert (scores["A"] + scores["B"]) / 2 == pytest.approx(1000)


def test_ties_count_half_a_win_each_way_and_both_bad_is_a_tie():
    # One win and two ties: 2 wins to 1, odds 2:1.
    with_ties = bradley_terry([("A", "B", "a"), ("A", "B", "tie"), ("B", "A", "tie")])
    assert with_ties["A"] - with_ties["B"] == pytest.approx(400 * math.log10(2), abs=0.5)
    assert bradley_terry([("A", "B", "a"), ("A", "B", "both_bad"), ("B", "A", "both_bad")]) == with_ties
    # FastChat's way (a win counted twice, a tie once) gives the same scores.
    doubled = bradley_terry([("A", "B", "a")] * 2 + [("A", "B", "a"), ("A", "B", "b")] * 2)
    assert doubled["A"] == pytest.approx(with_ties["A"], abs=0.5)


def test_a_model_that_always_wins_ranks_above_and_stays_finite():
    scores = bradley_terry([("A", "B", "a")] * 8 + [("C", "A", "b")] * 8 + [("B", "C", "tie")] * 4)
    assert scores["A"] > scores["B"] and scores["A"] > scores["C"]
    assert scores["B"] == pytest.approx(scores["C"])
    assert all(math.isfinite(s) for s in scores.values())


def test_symmetric_battles_give_equal_scores():
    assert bradley_terry([("A", "B", "a"), ("A", "B", "b")] * 5) == pytest.approx({"A": 1000.0, "B": 1000.0})
    cycle = [("A", "B", "a"), ("B", "C", "a"), ("C", "A", "a")] * 4
    assert bradley_terry(cycle) == pytest.approx({"A": 1000.0, "B": 1000.0, "C": 1000.0})
    assert bradley_terry([]) == {}


def test_bradley_terry_refuses_bad_battles():
    with pytest.raises(ParameterError, match="battle 2: a vote is one of a, b, tie, both_bad, got 'c'"):
        bradley_terry([("A", "B", "a"), ("A", "B", "c")])
    with pytest.raises(ParameterError, match="battle 1: 'A' cannot battle itself"):
        bradley_terry([("A", "A", "tie")])


# ---- the leaderboard ----------------------------------------------------------------------------------------

BATTLES = ([("big", "small", "a")] * 9 + [("big", "small", "b")] + [("small", "tiny", "a")] * 6
           + [("small", "tiny", "tie")] * 4 + [("big", "tiny", "both_bad")] * 2 + [("tiny", "big", "b")] * 3)


def test_leaderboard_ranks_with_intervals_that_contain_the_scores():
    board = bt_leaderboard(BATTLES)
    assert [row.model for row in board.rows] == ["big", "small", "tiny"]
    for row in board.rows:
        assert row.low < row.score < row.high
    assert [(row.votes, row.wins) for row in board.rows] == [(15, 12), (20, 7), (15, 0)]
    assert board.enough and board.message == "25 votes"
    assert board.rows[0] == (board.rows[0].model, *board.rows[0][1:])  # rows are plain tuples too
    assert board.to_dict()["rows"][0]["model"] == "big"


def test_leaderboard_is_deterministic_with_its_seed():
    assert bt_leaderboard(BATTLES, seed=1) == bt_leaderboard(BATTLES, seed=1)
    assert bt_leaderboard(BATTLES, seed=1).rows != bt_leaderboard(BATTLES, seed=2).rows
    # The point estimates do not depend on the resampling.
    assert [r.score for r in bt_leaderboard(BATTLES, seed=1).rows] == [r.score for r in bt_leaderboard(BATTLES).rows]


def test_leaderboard_below_the_threshold_says_so():
    board = bt_leaderboard(BATTLES[:3])
    assert not board.enough and board.message == "not enough votes yet (3 of 10)"
    assert [row.model for row in board.rows] == ["big", "small"]
    empty = bt_leaderboard([])
    assert empty.rows == [] and empty.message == "not enough votes yet (0 of 10)"
    assert bt_leaderboard(BATTLES[:3], min_votes=3).enough


def test_more_votes_narrow_the_intervals():
    few = bt_leaderboard([("A", "B", "a")] * 6 + [("A", "B", "b")] * 4).rows[0]
    many = bt_leaderboard([("A", "B", "a")] * 60 + [("A", "B", "b")] * 40).rows[0]
    assert many.score == pytest.approx(few.score, abs=1)  # the same 3:2 odds
    assert many.high - many.low < (few.high - few.low) / 2
