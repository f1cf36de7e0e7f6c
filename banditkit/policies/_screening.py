"""``LinUCB.select_batch`` for float64 policies: score in float32, certify, rescore the near ties exactly.

``select_batch`` costs ``d**2 / 2`` multiply-adds per context and arm (``x^T A^{-1} x`` through one
triangle, ``trmm``), which float32 does twice as fast. ``screened_argmax`` scores the contexts, scaled
to unit norm, in float32, with a rigorous bound on how far each float32 score can be from the float64
ones of ``select`` (input rounding, ``2 d`` float32 roundoffs in the products, float64 roundoffs, times
``|x|^T |A^{-1}| |x|``, bounded per arm by the largest absolute row sum, which ``ScreenBounds`` caches
until the arm's next update). A context whose best arm beats every other by more than the bounds gets
it; the others (near ties, typically about 1%) get ``select``'s scores for the arms still in
contention, computed exactly as ``select`` computes them, so the choices are those of repeated
``select``, ties included. Arms with bitwise equal statistics tie and the lowest wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from banditkit.policies._linear_arms import _BLAS, _one_thread_matmul
from banditkit.validation import FloatArray, IntArray

# The screen pays from these sizes on: below them the setup (a float32 copy of each inverse) and the
# bookkeeping outweigh the faster products.
_SCREEN_MIN_ROWS = 64
_SCREEN_MIN_DIM = 64
_SCREEN_MIN_WORK = 2**22  # rows * dim**2
# Contexts per chunk of the screen (float32 numbers of work space): few and large trmm calls, since a
# threaded BLAS call can wait milliseconds for a core on a busy machine.
_SCREEN_CHUNK_NUMBERS = 2**22
# Rows the screen leaves undecided (near ties) are scored as select scores them up to this many
# multiply-adds, else all in float64 at once.
_NEAR_TIE_MULTIPLY_ADDS = 2**26
_U32 = 2.0**-24  # unit roundoffs
_U64 = 2.0**-53

# The exact float64 choices for a batch of contexts (the fallback), and one arm's score for one context
# computed bitwise as ``select`` computes it.
ExactChoices = Callable[[FloatArray], IntArray]
ExactScore = Callable[[int, FloatArray], float]


def worth_screening(n_rows: int, dim: int) -> bool:
    """Whether a float64 batch of ``n_rows`` contexts of dimension ``dim`` is faster screened."""
    return n_rows >= _SCREEN_MIN_ROWS and dim >= _SCREEN_MIN_DIM and n_rows * dim * dim >= _SCREEN_MIN_WORK


class ScreenBounds:
    """Per arm, upper bounds on ``|x|^T |M| |x|`` and ``|x^T (M - M_u) x|`` over unit ``x``, for the arm's
    inverse ``M`` and the symmetric ``M_u`` with its upper triangle; each kept until the arm's update
    count changes. Adding or removing arms renumbers them: call ``clear``."""

    def __init__(self) -> None:
        self._bounds: dict[int, tuple[int, float, float]] = {}

    def clear(self) -> None:
        """Forget every arm's bounds."""
        self._bounds.clear()

    def of(self, arm: int, count: int, inverse: FloatArray, triangle: bool) -> tuple[float, float]:
        """The bounds for ``arm`` with ``count`` updates and ``inverse`` (only its upper triangle is
        maintained when ``triangle``, so the asymmetry term is zero)."""
        cached = self._bounds.get(arm)
        if cached is not None and cached[0] == count:
            return cached[1], cached[2]
        rows, asym_rows = _abs_row_sums(inverse, not triangle)
        asym = float(asym_rows.max()) * (1.0 + 2.0**-20)  # the factors cover the rounding of the sums
        bound = float(rows.max()) * (1.0 + 2.0**-20) + asym
        self._bounds[arm] = (count, bound, asym)
        return bound, asym


def screened_argmax(xs: FloatArray, blocks: FloatArray, alpha: float, *, bounds: ScreenBounds,
                    counts: Sequence[int], triangle: bool, exact: ExactChoices,
                    exact_score: ExactScore) -> IntArray:
    """For each row of the float64 ``xs``, the arm with the largest ``theta . x + alpha sqrt(x^T M x)``,
    bitwise as ``select`` would choose it, mostly decided in float32 (see the module docstring).

    ``blocks`` is the ``(K, d + 1, d)`` stack of each arm's inverse ``M`` (upper triangle read) and
    ``theta``; ``counts`` the arms' update counts, which key the cached ``bounds``; ``exact`` chooses for
    a batch in float64 and ``exact_score`` scores one arm for one context as ``select`` does.
    """
    n, d = xs.shape
    arms = _distinct_arms(blocks)
    choices = np.zeros(n, dtype=np.int64)
    if len(arms) == 1:
        return choices
    arm_bounds = [bounds.of(k, counts[k], blocks[k, :d], triangle) for k in arms]
    screen = _screen_setup(blocks, arms, alpha, arm_bounds)
    if screen is None:
        return exact(xs)
    mats, scales, var_err, mean_err = screen
    trmm = _BLAS["float32"].trmm
    chunk = max(256, _SCREEN_CHUNK_NUMBERS // d)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # unusable rows, zero roots
        norms = np.sqrt(np.einsum("nd,nd->n", xs, xs))
        usable = (norms >= 2.0**-40) & (norms <= 2.0**40)
        inverse = np.divide(1.0, norms, out=np.zeros(n), where=usable)
        # Scores for the unit rows x / ||x||: the same argmax, and bounds relative to ||x|| = 1.
        scores = _one_thread_matmul(xs, np.ascontiguousarray(blocks[arms, d].T))
        scores *= inverse[:, None]
        errors = np.empty_like(scores)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            unit = xs[start:stop].astype(np.float32, order="C")  # trmm works in place on C rows
            unit *= inverse[start:stop, None].astype(np.float32)
            work = np.empty_like(unit)
            for j, mat in enumerate(mats):
                np.copyto(work, unit)
                trmm(1.0, mat.T, work.T, side=0, lower=1, overwrite_b=1)  # rows (2 triu(M) - diag) x
                var = np.einsum("nd,nd->n", work, unit).astype(np.float64)
                var *= scales[j]
                root = np.sqrt(np.maximum(var, 0.0))
                scores[start:stop, j] += alpha * root
                # |sqrt(a) - sqrt(b)| <= min(sqrt(|a - b|), |a - b| / sqrt(b)) for a, b >= 0
                spread = np.minimum(math.sqrt(var_err[j]), var_err[j] / root)
                errors[start:stop, j] = (alpha * (1.0 + 2.0**-20)) * spread + mean_err[j]
    rows = np.arange(n)
    best = scores.argmax(axis=1)
    low = scores[rows, best] - errors[rows, best]
    high = scores + errors
    high[rows, best] = -np.inf
    sure = usable & (low > high.max(axis=1))  # NaN compares False: unusable rows stay unsure
    choices[sure] = np.asarray(arms)[best[sure]]
    near = np.flatnonzero(usable & ~sure)
    if near.size:
        # The arms that may beat the float32 best: select's choice is among them.
        contenders = ~(high[near] < low[near, None])
        contenders[np.arange(near.size), best[near]] = True
        if np.count_nonzero(contenders) * d * d <= _NEAR_TIE_MULTIPLY_ADDS:
            candidates = np.asarray(arms)
            choices[near] = _choose_among(xs[near], [candidates[c] for c in contenders], exact_score)
        else:
            choices[near] = exact(xs[near])
    far = np.flatnonzero(~usable & (norms > 0.0))  # all scores of a zero row are 0: arm 0
    if far.size:
        choices[far] = exact(xs[far])
    return choices


def _choose_among(xs: FloatArray, contenders: list[IntArray], exact_score: ExactScore) -> list[int]:
    """For each row, ``select``'s choice given the only arms that can win it (ascending): the first
    largest of their exact scores."""
    picks = []
    for x, arms in zip(xs, contenders, strict=True):
        scores = [exact_score(k, x) for k in arms.tolist()]
        picks.append(int(arms[int(np.argmax(scores))]))
    return picks


def _distinct_arms(blocks: FloatArray) -> list[int]:
    """The arms whose statistics differ from every lower arm's (an equal one ties and loses)."""
    d = blocks.shape[2]
    seen: dict[bytes, list[int]] = {}
    arms = []
    for k in range(blocks.shape[0]):
        twins = seen.setdefault(blocks[k, d].tobytes(), [])
        if not any(np.array_equal(blocks[k], blocks[j]) for j in twins):
            twins.append(k)
            arms.append(k)
    return arms


def _screen_setup(blocks: FloatArray, arms: list[int], alpha: float, arm_bounds: list[tuple[float, float]]
                  ) -> tuple[list[FloatArray], list[float], list[float], list[float]] | None:
    """Per arm: the float32 matrix, the scale of its quadratic forms, and bounds on how far a float32
    variance and a float64 mean, for a unit context, can be from those of any float64 path (``select``,
    batched float64 scoring). ``None`` when an arm's numbers are beyond what float32 (or the bounds) can
    take.

    With ``S = |x|^T |M| |x|``, the variance bound adds: rounding the inputs to float32 (``7 u S``), the
    float32 ``trmm`` and dot (``gamma_n(2 d) S``), the float64 paths' products (``gamma_n(4 d + 16) S``),
    float32 underflow, and the asymmetry between the triangle and the whole inverse ``select`` reads
    below the triangle size. The mean bound: float64 products and the final additions and square root
    of both sides.
    """
    d = blocks.shape[2]
    if 2 * d * _U32 > 2.0**-6:
        return None
    var_rel = _gamma_n(2 * d + 8, _U32) + 8 * _U32 + _gamma_n(4 * d + 16, _U64) + 2.0**-60
    mats, scales, var_err, mean_err = [], [], [], []
    for k, (s_k, asym_k) in zip(arms, arm_bounds, strict=True):
        t_k = float(np.linalg.norm(blocks[k, d]))
        if not (2.0**-600 < s_k < 2.0**600 and t_k < 2.0**600 and alpha * math.sqrt(s_k) < 2.0**600):
            return None
        e = math.frexp(s_k)[1]
        mats.append(_screen_matrix(blocks[k, :d], e))
        scales.append(2.0**e)
        var_err.append(s_k * var_rel * (1.0 + 2.0**-20) + asym_k + 2.0**-900)
        mean_err.append(_gamma_n(2 * d + 8, _U64) * t_k + 16 * _U64 * (t_k + alpha * math.sqrt(s_k))
                        + 2.0**-900)
    return mats, scales, var_err, mean_err


def _screen_matrix(m: FloatArray, e: int) -> FloatArray:
    """float32 ``(2 triu(m) - diag(m)) * 2**-e`` for an inverse ``m`` (the upper triangle, all that
    ``trmm`` reads), so that ``x^T m x = 2**e * x . (mat^T x)``."""
    d = m.shape[0]
    mat = np.empty((d, d), dtype=np.float32)
    with np.errstate(over="ignore"):  # the lower triangle is not read (stale from the triangle size on)
        np.multiply(m, 2.0 ** (1 - e), out=mat, casting="same_kind")
    np.fill_diagonal(mat, np.diagonal(m) * 2.0**-e)
    return mat


def _abs_row_sums(m: FloatArray, asymmetry: bool, block: int = 128) -> tuple[FloatArray, FloatArray]:
    """Row sums of ``|S|`` for the symmetric ``S`` with the upper triangle of the square ``m``, and (if
    ``asymmetry``, else zeros) of ``|m - m^T|``; by blocks, which keeps the transposed reads in cache."""
    d = m.shape[0]
    rows = np.zeros(d)
    asym = np.zeros(d)
    for i in range(0, d, block):
        j = min(i + block, d)
        upper = m[i:j, i:]
        a = np.abs(upper)
        a[:, : j - i] = np.triu(a[:, : j - i])
        rows[i:j] += a.sum(axis=1) - np.diagonal(a)
        rows[i:] += a.sum(axis=0)
        if asymmetry:
            diff = np.abs(upper - m[i:, i:j].T)
            asym[i:j] += diff.sum(axis=1)
            asym[j:] += diff[:, j - i:].sum(axis=0)
    return rows, asym


def _gamma_n(n: int, u: float) -> float:
    """The classic bound ``n u / (1 - n u)`` on the relative rounding error of ``n`` operations."""
    return n * u / (1.0 - n * u)
