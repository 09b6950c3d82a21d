"""The statistics of a report and of the arena: bootstrap intervals, McNemar's paired test, Bradley-Terry scores.

numpy only, on purpose: each computation here is a few lines (McNemar's exact p is a binomial sum, its
chi-square p is ``erfc``, Bradley-Terry is a Newton solve on an m x m win matrix), so scipy would add a
large dependency for no better answer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from chatcore.core.errors import ParameterError
from storage.evaluation import VOTES

BOOTSTRAP_CELLS = 1_000_000  # resampled values drawn at once: bounds the memory of a bootstrap on a big set
MCNEMAR_EXACT_BELOW = 25  # discordant pairs under which McNemar's p is the exact binomial one
# Chatbot Arena's scale: 400 points per factor of 10 in the odds of winning, a mean model at 1000.
ELO_SCALE, ELO_BASE, ELO_MEAN = 400.0, 10.0, 1000.0
# A tiny ridge on the strengths (natural-log units): keeps a model that won every battle finite and the
# Newton steps well posed; it also centres the strengths at mean 0, since the likelihood ignores a shift.
BT_L2 = 1e-3
MIN_VOTES = 10


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile-bootstrap interval over ``n`` values (NaN bounds when n is 0)."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_interval(values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> Interval:
    """The mean of ``values`` and its percentile-bootstrap interval; the same seed gives the same interval."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ParameterError("resamples", f"resamples must be a whole number of at least 1, got {resamples!r}")
    if not 0 < confidence < 1:
        raise ParameterError("confidence", f"confidence must be between 0 and 1, got {confidence!r}")
    data = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(data)):
        raise ParameterError("values", "bootstrap values must be finite numbers")
    n = len(data)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CELLS // n)
    means = np.concatenate([data[rng.integers(0, n, size=(min(rows, resamples - start), n))].mean(axis=1)
                            for start in range(0, resamples, rows)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high), n)


@dataclass(frozen=True)
class McNemar:
    """McNemar's paired test: b01 = items only b got right, b10 = items only a got right."""

    b01: int
    b10: int
    statistic: float  # exact: min(b01, b10); else chi-square with continuity correction
    p_value: float
    exact: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """McNemar's test on two models' correctness over the same items, in the same order: the exact two-sided
    binomial p under ``MCNEMAR_EXACT_BELOW`` discordant pairs, else chi-square (1 df) with continuity correction."""
    if len(a) != len(b):
        raise ParameterError("items", f"McNemar pairs the same items: got {len(a)} and {len(b)} results")
    b01 = sum(1 for x, y in zip(a, b) if not x and y)
    b10 = sum(1 for x, y in zip(a, b) if x and not y)
    n = b01 + b10
    if n < MCNEMAR_EXACT_BELOW:
        k = min(b01, b10)
        # Two-sided exact p of Binomial(n, 1/2): twice the smaller tail, in integers until the one division.
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
        return McNemar(b01, b10, float(k), p, True)
    statistic = (abs(b01 - b10) - 1) ** 2 / n
    # The chi-square (1 df) survival function: P(Z^2 > x) = erfc(sqrt(x / 2)).
    return McNemar(b01, b10, statistic, math.erfc(math.sqrt(statistic / 2)), False)


Battle = tuple[str, str, str]  # (model_a, model_b, vote): vote is "a", "b", "tie" or "both_bad"


def _battle_arrays(battles: Sequence[Battle], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each battle as (i, j, share of a win to i): 1 for "a", 0 for "b", and 1/2 for "tie" and "both_bad".
    "both_bad" is a tie, as in FastChat (whose "tie (bothbad)" joins the ties): neither answer was better;
    FastChat counts a tie as half a win each way by counting wins twice and ties once."""
    i = np.array([index[a] for a, _, _ in battles], dtype=np.intp)
    j = np.array([index[b] for _, b, _ in battles], dtype=np.intp)
    share = np.array([{"a": 1.0, "b": 0.0}.get(vote, 0.5) for _, _, vote in battles])
    return i, j, share


def _win_matrix(m: int, i: np.ndarray, j: np.ndarray, share: np.ndarray) -> np.ndarray:
    """wins[i, j]: how often i beat j, a tie counting half a win each way."""
    wins = np.zeros((m, m))
    np.add.at(wins, (i, j), share)
    np.add.at(wins, (j, i), 1.0 - share)
    return wins


def _log_likelihood(theta: np.ndarray, wins: np.ndarray, l2: float) -> float:
    diff = theta[:, None] - theta[None, :]
    return float(-(wins * np.logaddexp(0.0, -diff)).sum() - l2 / 2 * theta @ theta)


def fit_strengths(wins: np.ndarray, *, l2: float = BT_L2) -> np.ndarray:
    """Bradley-Terry strengths (natural log odds units) maximizing the ridge-penalized likelihood of ``wins``:
    Newton's method with a backtracking line search (the objective is strictly concave)."""
    m = len(wins)
    games = wins + wins.T
    theta = np.zeros(m)
    current = _log_likelihood(theta, wins, l2)
    for _ in range(200):
        p = 0.5 * (1 + np.tanh((theta[:, None] - theta[None, :]) / 2))  # P(i beats j), without overflow
        gradient = (wins - games * p).sum(axis=1) - l2 * theta
        curvature = games * p * (1 - p)
        hessian = curvature - np.diag(curvature.sum(axis=1) + l2)
        step = np.linalg.solve(-hessian, gradient)
        decrement = float(gradient @ step)  # twice the gain a full Newton step promises
        if decrement < 1e-12:
            break
        t = 1.0
        while (candidate := _log_likelihood(theta + t * step, wins, l2)) < current + 1e-4 * t * decrement:
            t /= 2
            if t < 1e-10:  # no progress left at float precision
                return theta
        theta, current = theta + t * step, candidate
    return theta


def _check_battles(battles: Sequence[Battle]) -> list[str]:
    """The models in ``battles``, sorted; a clear error for a bad vote or a model against itself."""
    for n, (model_a, model_b, vote) in enumerate(battles, start=1):
        if vote not in VOTES:
            raise ParameterError("vote", f"battle {n}: a vote is one of {', '.join(VOTES)}, got {vote!r}")
        if model_a == model_b:
            raise ParameterError("battle", f"battle {n}: {model_a!r} cannot battle itself")
    return sorted({m for battle in battles for m in battle[:2]})


def _to_elo(theta: np.ndarray) -> np.ndarray:
    return ELO_MEAN + ELO_SCALE * theta / math.log(ELO_BASE)


def bradley_terry(battles: Sequence[Battle]) -> dict[str, float]:
    """Each model's Bradley-Terry score on Chatbot Arena's Elo-like scale (mean 1000), by maximum likelihood."""
    models = _check_battles(battles)
    if not models:
        return {}
    wins = _win_matrix(len(models), *_battle_arrays(battles, {m: i for i, m in enumerate(models)}))
    return dict(zip(models, _to_elo(fit_strengths(wins)).tolist()))


class LeaderboardRow(NamedTuple):
    """One model on the leaderboard: its score, the bootstrap 95% interval, its battles and outright wins."""

    model: str
    score: float
    low: float
    high: float
    votes: int
    wins: int


@dataclass(frozen=True)
class Leaderboard:
    """Models by Bradley-Terry score, best first; ``enough`` is False below the vote threshold."""

    rows: list[LeaderboardRow]
    enough: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [row._asdict() for row in self.rows], "enough": self.enough, "message": self.message}


def _bootstrap_scores(battles: Sequence[Battle], models: list[str], resamples: int, seed: int) -> np.ndarray:
    """Scores refitted on battles drawn with replacement: one row per resample; NaN for a model that a
    resample left out (its score would only be the ridge's 1000)."""
    i, j, share = _battle_arrays(battles, {m: k for k, m in enumerate(models)})
    rng = np.random.default_rng(seed)
    out = np.full((resamples, len(models)), np.nan)
    for r in range(resamples):
        drawn = rng.integers(0, len(battles), size=len(battles))
        wins = _win_matrix(len(models), i[drawn], j[drawn], share[drawn])
        present = np.flatnonzero((wins + wins.T).sum(axis=1) > 0)
        out[r, present] = _to_elo(fit_strengths(wins[np.ix_(present, present)]))
    return out


def bt_leaderboard(battles: Sequence[Battle], *, resamples: int = 200, seed: int = 0,
                   min_votes: int = MIN_VOTES) -> Leaderboard:
    """The arena leaderboard: Bradley-Terry scores with 95% intervals from a bootstrap over battles."""
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ParameterError("resamples", f"resamples must be a whole number of at least 1, got {resamples!r}")
    models = _check_battles(battles)
    n = len(battles)
    enough = n >= min_votes
    message = f"{n} votes" if enough else f"not enough votes yet ({n} of {min_votes})"
    if not models:
        return Leaderboard([], enough, message)
    scores = bradley_terry(battles)
    samples = _bootstrap_scores(battles, models, resamples, seed)
    rows = []
    for i, model in enumerate(models):
        low, high = np.nanpercentile(samples[:, i], [2.5, 97.5])
        votes = sum(1 for a, b, _ in battles if model in (a, b))
        wins = sum(1 for a, b, v in battles if (v == "a" and a == model) or (v == "b" and b == model))
        rows.append(LeaderboardRow(model, scores[model], float(low), float(high), votes, wins))
    rows.sort(key=lambda row: (-row.score, row.model))
    return Leaderboard(rows, enough, message)
