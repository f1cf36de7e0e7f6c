"""Disjoint LinUCB on the per-arm ridge regressions of ``_linear_arms``.

``select`` scores every arm with one stacked product (see ``_linear_arms``); ``select_batch`` screens
float64 batches in float32 with a rigorous error bound and rescores the near ties exactly
(``_screening``), so it chooses what repeated ``select`` would, ties included.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from banditkit.base import Seed
from banditkit.policies._linear_arms import _LinearArms, _row_dots
from banditkit.policies._screening import ScreenBounds, screened_argmax, worth_screening
from banditkit.validation import FloatArray, IntArray, check_context, check_real


class LinUCB(_LinearArms, register=True):
    """Disjoint LinUCB (Li et al., 2010): play ``argmax_a theta_a . x + alpha * sqrt(x^T A_a^{-1} x)``.

    ``alpha`` >= 0 scales the exploration bonus, ``ridge`` > 0 is the prior precision (``A = ridge * I``
    before any data), ``discount`` in (0, 1] is the forgetting factor for drifting rewards (1: no
    discount; the scheme is described below), ``dtype`` is ``"float64"`` or ``"float32"``
    (half the memory and time at large ``dim``). Deterministic: ties go to the lowest arm index, and
    ``probabilities`` is one-hot. ``arm_scores`` (also ``scores``) returns the upper confidence bounds
    ``select`` maximizes; ``select_topk`` ranks arms by them. ``state_dict()["state"]`` holds ``A``
    (design matrices), ``A_inv``, ``b``, ``theta`` (``K x d`` / ``K x d x d`` arrays) and ``counts``
    (updates per arm). States saved when ``discount`` was called ``gamma`` still load.

    With ``discount < 1`` each update first discounts what the arm knows along the new context ``x``
    (directional forgetting, Kulhavy 1987), then adds ``x`` as usual; with ``c = discount``::

        A <- A - (1 - c) (A x)(A x)^T / (x^T A x)       so x^T A x <- c * x^T A x
        b <- b - (1 - c) (A x)(x^T b) / (x^T A x)       theta = A^{-1} b keeps its value
        A^{-1} <- A^{-1} + (1 - c) / c * x x^T / (x^T A x)      exact (Sherman-Morrison)

    The estimate keeps its value while its confidence along ``x`` shrinks, so new rewards outweigh old
    ones there: after ``m`` more observations along one direction an old one weighs ``discount**m``.
    Directions the arm does not see keep their ridge, so ``A`` stays positive definite and its inverse
    stays exact with rank-one updates. (Scaling all of ``A`` by ``discount`` each step would also decay
    the ridge, driving ``A`` towards singular in unseen directions; adding ``(1 - discount) * ridge * I``
    back keeps the ridge but is a full-rank change that no rank-one update can follow.) An arm's
    statistics change only when that arm is updated.

    >>> import numpy as np
    >>> from banditkit.policies.linucb import LinUCB
    >>> weights = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # arm k pays weights[k] . x
    >>> policy = LinUCB(n_arms=3, dim=2, alpha=0.5, seed=0)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(300):
    ...     x = rng.normal(size=2)
    ...     arm = policy.select(x)
    ...     policy.update(arm, float(weights[arm] @ x) + 0.1 * rng.normal(), x)
    >>> [policy.select(np.array(x)) for x in ([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0])]
    [0, 1, 2]
    """

    def __init__(self, n_arms: int, dim: int, *, alpha: float = 1.0, ridge: float = 1.0, discount: float = 1.0,
                 dtype: str = "float64", seed: Seed = None) -> None:
        self.alpha = check_real("alpha", alpha, low=0.0)
        super().__init__(n_arms, dim, ridge=ridge, discount=discount, dtype=dtype, seed=seed)

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self._d, "alpha": self.alpha, "ridge": self.ridge, "discount": self.discount,
                "dtype": self.dtype}

    @classmethod
    def _saved_hyperparams(cls, hyperparams: dict[str, Any]) -> dict[str, Any]:
        """States saved before ``discount`` was renamed call it ``gamma``."""
        hyper = dict(hyperparams)
        old = hyper.pop("gamma", None)
        if old is not None:
            hyper.setdefault("discount", old)
        return hyper

    def _scores(self, x: FloatArray) -> FloatArray:
        """Upper confidence bounds (a variance that rounding made negative counts as 0)."""
        means, var = self._means_variances(x)
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=var)
        var *= self.alpha
        var += means
        return var

    def _arm_scores(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        return self._scores(context)

    def scores(self, context: ArrayLike) -> FloatArray:
        """Each arm's upper confidence bound for ``context`` (what ``select`` maximizes); draws nothing.
        The same as ``arm_scores``.

        >>> import numpy as np
        >>> LinUCB(n_arms=2, dim=2, alpha=1.0).scores(np.array([1.0, 0.0])).tolist()
        [1.0, 1.0]
        """
        return self.arm_scores(context)

    def select(self, context: ArrayLike | None = None) -> int:
        """Choose one arm for ``context``: the largest upper confidence bound, the lowest index on ties."""
        x = context
        if not (type(x) is np.ndarray and x.dtype is self._np_dtype and x.shape == self._shape
                and math.isfinite(np.dot(x, x))):
            x = check_context(context, self._d, self._float)
        out = self._products(x)
        d = self._d
        scores = _row_dots(out[:, :d], x)
        np.sqrt(scores, out=scores)
        scores *= self.alpha
        scores += out[:, d]
        arm = int(scores.argmax())  # the first maximum, or the first NaN (a negative rounded variance)
        if math.isfinite(scores[arm]):
            return arm
        return self._select(x)

    def _select(self, context: FloatArray | None) -> int:
        assert context is not None
        scores = self._scores(context)
        arm = int(scores.argmax())
        if not math.isfinite(scores[arm]):
            self._nonfinite(context)
        return arm

    def select_batch(self, contexts: ArrayLike | None = None, *, n: int | None = None) -> IntArray:
        """Choose an arm for each row of ``contexts`` (vectorized over contexts and arms), as repeated
        ``select`` would; large float64 batches are mostly decided in float32 (``_screening``)."""
        xs = self._contexts(contexts, n)
        assert isinstance(xs, np.ndarray)
        n_rows, d = xs.shape
        if self._kind == "float64" and worth_screening(n_rows, d):
            return screened_argmax(xs, self._blocks, self.alpha, bounds=self._screen_bounds,
                                   counts=self._counts, triangle=self._triangle, exact=self._batch_choices,
                                   exact_score=self._score_of)
        return self._batch_choices(xs)

    def _batch_choices(self, xs: FloatArray) -> IntArray:
        """The argmax of the upper confidence bounds in the policy's dtype, the lowest arm on ties."""
        means, var = self._batch_means_variances(xs)
        scores = means + self.alpha * np.sqrt(var)
        return scores.argmax(axis=1).astype(np.int64)  # type: ignore[no-any-return]

    def _score_of(self, arm: int, x: FloatArray) -> float:
        """``arm``'s upper confidence bound for ``x``, bitwise as ``select`` computes it."""
        d = self._d
        out = self._products_of(arm, x)
        var = _row_dots(out[None, :d], x)
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=var)
        var *= self.alpha
        var += out[d]
        return float(var[0])

    def _configure(self) -> None:
        super()._configure()
        self._screen_bounds = ScreenBounds()

    def _add_arm(self) -> None:
        super()._add_arm()
        self._screen_bounds.clear()

    def _remove_arm(self, arm: int) -> None:
        super()._remove_arm(arm)
        self._screen_bounds.clear()

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        p = np.zeros(self._n_arms)
        p[self._select(context)] = 1.0
        return p

    def _ranking_scores(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        return self._scores(context).astype(np.float64)
