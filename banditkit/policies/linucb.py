"""Disjoint LinUCB, and the per-arm ridge regression state it shares with linear Thompson sampling.

Each arm ``a`` keeps a design matrix ``A_a = ridge * I + sum x x^T``, its inverse, ``b_a = sum r x`` and
``theta_a = A_a^{-1} b_a``. The inverse is kept exact with rank-one (Sherman-Morrison) updates, so no
decision or update ever inverts or factorizes a matrix.

Speed notes (they decide the layout):

- Each arm's inverse and ``theta`` share one ``(d + 1, d)`` block, so a single ``matmul`` over the
  ``(K, d + 1, d)`` stack yields ``A^{-1} x`` and ``theta . x`` for every arm. ``update`` reuses what the
  preceding ``select`` computed for the same context (matched by content); without one it recomputes
  the arm's block alone with the same BLAS call, so the result is bitwise the same either way.
- From ``d = 512`` on, only the upper triangle of each inverse is read (``symv``) and written (``syr``),
  which halves the memory traffic that bounds the cost at large ``d``.
- The design matrices are not needed to decide, so their rank-one terms are buffered and added in one
  ``gemm`` every ``_PENDING`` updates (``state_dict`` adds them first).
- On a machine with few or busy cores, OpenBLAS's threads can make these matrix-vector products ten to
  a hundred times slower; pin BLAS to one thread around online loops
  (``threadpoolctl.threadpool_limits(1)``). Each threaded call can wait milliseconds for a core, so
  ``select_batch`` makes few, large ones and keeps small products on the calling thread.
- ``select_batch`` costs ``d**2 / 2`` multiply-adds per context and arm (``x^T A^{-1} x`` through one
  triangle, ``trmm``), which float32 does twice as fast. For a float64 policy it scores the contexts,
  scaled to unit norm, in float32, with a rigorous bound on how far each float32 score can be from the
  float64 ones of ``select`` (input rounding, ``2 d`` float32 roundoffs in the products, float64
  roundoffs, times ``|x|^T |A^{-1}| |x|``, bounded per arm by the largest absolute row sum, which is
  cached until the arm's next update). A context whose best arm beats every other by more than the
  bounds gets it; the others (near ties, typically about 1%) get ``select``'s scores for the arms
  still in contention, computed exactly as ``select`` computes them, so ``select_batch`` picks what
  repeated ``select`` would, ties included. Arms with bitwise equal statistics tie and the lowest wins.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import blas

from banditkit._validation import FloatArray, IntArray, check_arm, check_context, check_real, check_reward
from banditkit.base import BasePolicy, Seed

_DTYPES: dict[str, type[np.floating[Any]]] = {"float64": np.float64, "float32": np.float32}

# From this context dimension on, inverses are used through one triangle only (see the module docstring).
# Below it the matrices sit in cache and one stacked matmul over all arms is as fast.
_TRIANGLE_MIN_DIM = 512
# Rank-one terms of a design matrix buffered before they are added in one gemm.
_PENDING = 32
# Contexts per chunk in select_batch: about 2**22 numbers of work space per arm, so few and large trmm
# calls (a threaded BLAS call can wait milliseconds for a core on a busy machine).
_CHUNK_NUMBERS = 2**22
# LinUCB.select_batch screens float64 policies in float32 (module docstring) from these sizes on: below
# them the setup (a float32 copy of each inverse) and the bookkeeping outweigh the faster products.
_SCREEN_MIN_ROWS = 64
_SCREEN_MIN_DIM = 64
_SCREEN_MIN_WORK = 2**22  # rows * dim**2
# Contexts per chunk of the screen (float32 numbers of work space), for the same reason.
_SCREEN_CHUNK_NUMBERS = 2**22
# Rows the screen leaves undecided (near ties) are scored as select scores them up to this many
# multiply-adds, else all in float64 at once.
_NEAR_TIE_MULTIPLY_ADDS = 2**26
# OpenBLAS keeps a matrix product with at most this many multiply-adds on the calling thread.
_ONE_THREAD_MNK = 2**18
_U32 = 2.0**-24  # unit roundoffs
_U64 = 2.0**-53


class _Blas(NamedTuple):
    ger: Any
    syr: Any
    symv: Any
    gemm: Any
    trmm: Any


# Looked up per call rather than stored on policies, which must stay copyable (f2py routines are not).
_BLAS = {name: _Blas(*blas.get_blas_funcs(_Blas._fields, dtype=dt)) for name, dt in _DTYPES.items()}


def _einsum_row_dots(a: FloatArray, x: FloatArray) -> FloatArray:
    out: FloatArray = np.einsum("kd,d->k", a, x)
    return out


# ``a @ x`` row by row with one routine, so equal rows give equal results (a matrix-vector product may
# round its last rows differently, which broke ties between equal arms away from the lowest index).
_row_dots: Callable[[FloatArray, FloatArray], FloatArray] = getattr(np, "vecdot", _einsum_row_dots)


def _check_dtype(dtype: Any) -> str:
    """Return ``dtype`` as ``"float64"`` or ``"float32"``."""
    try:
        name = str(np.dtype(dtype).name)
    except TypeError:
        name = ""
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return name


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


def _gamma(n: int, u: float) -> float:
    """The classic bound ``n u / (1 - n u)`` on the relative rounding error of ``n`` operations."""
    return n * u / (1.0 - n * u)


def _one_thread_matmul(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a @ b`` for 2-D arrays, in products small enough that OpenBLAS runs them on the calling thread
    (at least two rows each: numpy sends one-row products to ``gemv``)."""
    m, k = a.shape
    n = b.shape[1]
    out = np.empty((m, n), dtype=np.result_type(a, b))
    cols = max(1, min(n, _ONE_THREAD_MNK // (2 * k)))
    rows = max(2, _ONE_THREAD_MNK // (k * cols))
    for i in range(0, m, rows):
        for j in range(0, n, cols):
            np.matmul(a[i: i + rows], b[:, j: j + cols], out=out[i: i + rows, j: j + cols])
    return out


def _mirror_upper(m: FloatArray, block: int = 256) -> None:
    """Copy the upper triangle of the square ``m`` onto its lower triangle, in place (by blocks, which
    keeps the transposed reads in cache)."""
    d = m.shape[0]
    for i in range(0, d, block):
        m[i: i + block, :i] = m[:i, i: i + block].T
        diagonal = m[i: i + block, i: i + block]
        diagonal[...] = np.triu(diagonal) + np.triu(diagonal, 1).T


class _LinearArms(BasePolicy):
    """Per-arm ridge regression with an exactly maintained inverse, shared by LinUCB and LinTS.

    ``gamma < 1`` turns on directional forgetting, documented in ``LinUCB``.
    """

    contextual: ClassVar[bool] = True

    def __init__(self, n_arms: int, dim: int, *, ridge: float = 1.0, gamma: float = 1.0,
                 dtype: str = "float64", seed: Seed = None) -> None:
        super().__init__(n_arms, dim=dim, seed=seed)
        self.ridge = check_real("ridge", ridge, low=0.0, low_open=True)
        self.gamma = check_real("gamma", gamma, low=0.0, low_open=True, high=1.0)
        self.dtype = _check_dtype(dtype)
        self._configure()
        self._blocks = np.zeros((n_arms, self._d + 1, self._d), dtype=self._float)
        self._design = np.zeros((n_arms, self._d, self._d), dtype=self._float)
        for k in range(n_arms):
            self._fresh_arm(k)
        self._b = np.zeros((n_arms, self._d), dtype=self._float)
        self._counts = [0] * n_arms
        self._reset_pending()

    # ----------------------------------------------------------------- set-up
    def _configure(self) -> None:
        assert self.dim is not None
        self._d = self.dim
        self._kind = self.dtype  # the arrays' dtype, fixed until the next load_state_dict
        self._float = _DTYPES[self._kind]
        self._np_dtype = np.dtype(self._float)
        self._shape = (self._d,)
        self._triangle = self._d >= _TRIANGLE_MIN_DIM
        self._cache_key: bytes | None = None
        self._cache_out: FloatArray | None = None

    def _fresh_arm(self, k: int) -> None:
        """Set arm ``k``'s prior on zeroed arrays: ``A = ridge * I``, ``A^{-1} = I / ridge``."""
        np.fill_diagonal(self._blocks[k, : self._d], 1.0 / self.ridge)
        np.fill_diagonal(self._design[k], self.ridge)

    def _reset_pending(self) -> None:
        k = self._n_arms
        self._pend_y = np.zeros((k, _PENDING, self._d), dtype=self._float)
        self._pend_c = np.zeros((k, _PENDING), dtype=self._float)
        self._pend_r = np.zeros((k, _PENDING), dtype=self._float)
        self._pend_n = [0] * k

    def _dtype(self) -> type[np.floating[Any]]:
        return self._float

    # ----------------------------------------------------------------- validation fast paths
    def _fast_context(self, context: ArrayLike | None) -> FloatArray:
        """The context itself when it already is a finite ``(dim,)`` array of the policy's dtype (the
        common case, checked with one dot product), else the checked conversion."""
        if (type(context) is np.ndarray and context.dtype is self._np_dtype and context.shape == self._shape
                and math.isfinite(np.dot(context, context))):
            return context
        return check_context(context, self._d, self._float)

    def _nonfinite(self, x: FloatArray) -> None:
        """Raise for a non-finite result: a NaN/inf context (the usual message), else an overflow."""
        check_context(x, self._d, self._float)
        raise ValueError(f"the context is too large for this policy's {self._kind} arithmetic "
                         f"(max |x| = {float(np.max(np.abs(x))):.3g}): rescale the contexts")

    def select(self, context: ArrayLike | None = None) -> int:
        """Choose one arm for ``context``."""
        return self._select(self._fast_context(context))

    def update(self, arm: int, reward: float, context: ArrayLike | None = None) -> None:
        """Learn from the ``reward`` observed for ``arm`` in ``context``."""
        if type(arm) is not int or not 0 <= arm < self._n_arms:
            arm = check_arm(arm, self._n_arms)
        if type(reward) is not float or not math.isfinite(reward):
            reward = check_reward(reward)
        # The usual call follows select with the same context: reuse its check and its products.
        cached = self._cache_out
        if (cached is not None and type(context) is np.ndarray and context.dtype is self._np_dtype
                and context.shape == self._shape and context.tobytes() == self._cache_key):
            self._learn(arm, reward, context, cached[arm])
        else:
            self._update(arm, reward, self._fast_context(context))

    # ----------------------------------------------------------------- products with every arm
    def _products(self, x: FloatArray) -> FloatArray:
        """``(K, d + 1)``: row ``k`` holds ``A_k^{-1} x`` then ``theta_k . x``. Cached for ``update``."""
        if self._triangle:
            d, blocks, symv = self._d, self._blocks, _BLAS[self._kind].symv
            out = np.empty((self._n_arms, d + 1), dtype=self._float)
            for k in range(self._n_arms):
                out[k, :d] = symv(1.0, blocks[k, :d].T, x, lower=1)
                out[k, d] = np.dot(blocks[k, d], x)
        else:
            out = np.matmul(self._blocks, x)
        self._cache_key = x.tobytes()
        self._cache_out = out
        return out

    def _products_of(self, arm: int, x: FloatArray) -> FloatArray:
        """Row ``arm`` of ``_products(x)``, bitwise (the same BLAS call on the arm's block alone)."""
        d = self._d
        if self._triangle:
            out = np.empty(d + 1, dtype=self._float)
            out[:d] = _BLAS[self._kind].symv(1.0, self._blocks[arm, :d].T, x, lower=1)
            out[d] = np.dot(self._blocks[arm, d], x)
            return out
        return np.matmul(self._blocks[arm: arm + 1], x)[0]  # type: ignore[no-any-return]

    def _means_variances(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``theta_k . x`` and ``x^T A_k^{-1} x`` for every arm."""
        out = self._products(x)
        d = self._d
        var = _row_dots(out[:, :d], x)
        return out[:, d], var

    def _batch_means_variances(self, xs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Means and variances ``(n, K)`` for many contexts.

        ``x^T M x = 2 x^T tril(M) x - sum_i M_ii x_i^2`` for symmetric ``M``, and ``X tril(M)^T`` is one
        triangular multiply (``trmm``): half the work of ``X M`` and only the maintained triangle read.
        """
        n, d, k_arms = xs.shape[0], self._d, self._n_arms
        means = np.empty((n, k_arms), dtype=self._float)
        var = np.empty((n, k_arms), dtype=self._float)
        if n == 0:
            return means, var
        inv = self._blocks[:, :d, :]
        theta = np.ascontiguousarray(self._blocks[:, d, :].T)
        diag = np.ascontiguousarray(np.diagonal(inv, axis1=1, axis2=2).T)
        chunk = max(64, _CHUNK_NUMBERS // d)
        trmm = _BLAS[self._kind].trmm
        for start in range(0, n, chunk):
            x = xs[start: start + chunk]
            means[start: start + chunk] = _one_thread_matmul(x, theta)
            v = var[start: start + chunk]
            for k in range(k_arms):
                work = np.array(x, dtype=self._float, order="C", copy=True)
                trmm(1.0, inv[k].T, work.T, side=0, lower=1, overwrite_b=1)  # work = X tril(M)^T
                v[:, k] = np.einsum("nd,nd->n", work, x)
            v *= 2.0
            v -= _one_thread_matmul(x * x, diag)
        np.maximum(var, 0.0, out=var)
        return means, var

    # ----------------------------------------------------------------- learning
    def _update(self, arm: int, reward: float, context: FloatArray | None) -> None:
        assert context is not None
        self._learn(arm, reward, context, self._products_of(arm, context))

    def _learn(self, arm: int, reward: float, x: FloatArray, out: FloatArray) -> None:
        """The update proper; ``out`` is the arm's row of ``_products(x)``."""
        d = self._d
        u = out[:d]
        x_theta = float(out[d])
        den = 1.0 + float(np.dot(x, u))
        if not math.isfinite(den):
            self._nonfinite(x)
        if self.gamma < 1.0:
            u = self._forget(arm, x, u)
            den = 1.0 + float(np.dot(x, u))
        self._cache_out = self._cache_key = None
        # _rank_one_inverse and _pend, inlined: this is the hot path at small d.
        m_t = self._blocks[arm, :d].T  # F-contiguous view of the C-contiguous inverse
        if self._triangle:
            _BLAS[self._kind].syr(-1.0 / den, u, a=m_t, lower=1, overwrite_a=1)
        else:
            _BLAS[self._kind].ger(-1.0 / den, u, u, a=m_t, overwrite_a=1)
        self._blocks[arm, d] += ((reward - x_theta) / den) * u  # theta: the recursive least-squares step
        n = self._pend_n[arm]
        if n == _PENDING:
            self._flush(arm)
            n = 0
        self._pend_y[arm, n] = x
        self._pend_c[arm, n] = 1.0
        self._pend_r[arm, n] = reward
        self._pend_n[arm] = n + 1
        self._counts[arm] += 1

    def _forget(self, arm: int, x: FloatArray, u: FloatArray) -> FloatArray:
        """Directional forgetting along ``x`` (see the class docstring); returns the new ``A^{-1} x``.

        Works on the unit vector along ``x``: the update depends only on the direction, and this keeps
        ``x^T A x`` away from underflow for tiny contexts."""
        norm = float(np.linalg.norm(x))
        if not 0.0 < norm < math.inf:
            if math.isfinite(norm):
                return u  # x = 0: nothing to forget
            self._nonfinite(x)
        e = (x / norm).astype(self._float, copy=False)
        ae = self._design_times(arm, e)
        q = float(np.dot(e, ae))
        if not q > 0.0:
            return u
        c = 1.0 - self.gamma
        g = c / (self.gamma * q)
        self._rank_one_inverse(arm, g, e)
        self._pend(arm, -c / q, -c * float(np.dot(e, self._current_b(arm))) / q, ae)
        new_u: FloatArray = u + (g * float(np.dot(e, x))) * e
        return new_u

    def _rank_one_inverse(self, arm: int, alpha: float, v: FloatArray) -> None:
        """``A_arm^{-1} += alpha v v^T`` in place (the upper triangle only in triangle mode)."""
        m_t = self._blocks[arm, : self._d].T  # F-contiguous view of the C-contiguous matrix
        if self._triangle:
            _BLAS[self._kind].syr(alpha, v, a=m_t, lower=1, overwrite_a=1)
        else:
            _BLAS[self._kind].ger(alpha, v, v, a=m_t, overwrite_a=1)

    def _pend(self, arm: int, coef: float, weight: float, y: FloatArray) -> None:
        """Buffer ``A_arm += coef y y^T`` and ``b_arm += weight y``."""
        n = self._pend_n[arm]
        if n == _PENDING:
            self._flush(arm)
            n = 0
        self._pend_y[arm, n] = y
        self._pend_c[arm, n] = coef
        self._pend_r[arm, n] = weight
        self._pend_n[arm] = n + 1

    def _flush(self, arm: int) -> None:
        n = self._pend_n[arm]
        if n:
            y = self._pend_y[arm, :n]
            scaled = y * self._pend_c[arm, :n, None]
            _BLAS[self._kind].gemm(1.0, scaled.T, y.T, beta=1.0, c=self._design[arm].T, trans_b=1,
                                   overwrite_c=1)
            self._b[arm] += self._pend_r[arm, :n] @ y
            self._pend_y[arm, :n] = 0.0
            self._pend_c[arm, :n] = 0.0
            self._pend_r[arm, :n] = 0.0
            self._pend_n[arm] = 0

    def _current_b(self, arm: int) -> FloatArray:
        """``b_arm``, pending terms included."""
        n = self._pend_n[arm]
        b: FloatArray = self._b[arm] + self._pend_r[arm, :n] @ self._pend_y[arm, :n]
        return b

    def _design_times(self, arm: int, x: FloatArray) -> FloatArray:
        """``A_arm x``, pending terms included."""
        ax: FloatArray = self._design[arm] @ x
        n = self._pend_n[arm]
        if n:
            y = self._pend_y[arm, :n]
            ax += (self._pend_c[arm, :n] * (y @ x)) @ y
        return ax

    def _update_batch(self, arms: IntArray, rewards: FloatArray,
                      contexts: list[FloatArray | None] | FloatArray) -> None:
        for a, r, x in zip(arms.tolist(), rewards.tolist(), contexts, strict=True):
            self._update(a, r, x)

    # ----------------------------------------------------------------- arms and state
    def _add_arm(self) -> None:
        k = self._n_arms
        d = self._d
        self._blocks = np.concatenate([self._blocks, np.zeros((1, d + 1, d), dtype=self._float)])
        self._design = np.concatenate([self._design, np.zeros((1, d, d), dtype=self._float)])
        self._fresh_arm(k)
        self._b = np.concatenate([self._b, np.zeros((1, d), dtype=self._float)])
        self._counts.append(0)
        self._pend_y = np.concatenate([self._pend_y, np.zeros((1, _PENDING, d), dtype=self._float)])
        self._pend_c = np.concatenate([self._pend_c, np.zeros((1, _PENDING), dtype=self._float)])
        self._pend_r = np.concatenate([self._pend_r, np.zeros((1, _PENDING), dtype=self._float)])
        self._pend_n.append(0)
        self._cache_out = self._cache_key = None

    def _remove_arm(self, arm: int) -> None:
        self._blocks = np.delete(self._blocks, arm, axis=0)
        self._design = np.delete(self._design, arm, axis=0)
        self._b = np.delete(self._b, arm, axis=0)
        del self._counts[arm]
        self._pend_y = np.delete(self._pend_y, arm, axis=0)
        self._pend_c = np.delete(self._pend_c, arm, axis=0)
        self._pend_r = np.delete(self._pend_r, arm, axis=0)
        del self._pend_n[arm]
        self._cache_out = self._cache_key = None

    def _inverses(self) -> FloatArray:
        """A copy of every arm's ``A^{-1}`` as full symmetric matrices."""
        inv = self._blocks[:, : self._d, :].copy()
        if self._triangle:
            for m in inv:
                _mirror_upper(m)
        return inv

    def _get_state(self) -> dict[str, Any]:
        for k in range(self._n_arms):
            self._flush(k)
        return {
            "A": self._design.copy(),
            "A_inv": self._inverses(),
            "b": self._b.copy(),
            "theta": self._blocks[:, self._d, :].copy(),
            "counts": np.array(self._counts, dtype=np.int64),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.dtype = _check_dtype(self.dtype)
        self._configure()
        k, d = self._n_arms, self._d
        arrays = {}
        for key, shape in (("A", (k, d, d)), ("A_inv", (k, d, d)), ("b", (k, d)), ("theta", (k, d)),
                           ("counts", (k,))):
            value = np.asarray(state[key])
            if value.shape != shape:
                raise ValueError(f"state[{key!r}] has shape {value.shape}, expected {shape}")
            arrays[key] = value
        self._blocks = np.empty((k, d + 1, d), dtype=self._float)
        self._blocks[:, :d, :] = arrays["A_inv"]
        self._blocks[:, d, :] = arrays["theta"]
        self._design = np.array(arrays["A"], dtype=self._float)
        self._b = np.array(arrays["b"], dtype=self._float)
        self._counts = [int(c) for c in arrays["counts"]]
        self._reset_pending()


class LinUCB(_LinearArms):
    """Disjoint LinUCB (Li et al., 2010): play ``argmax_a theta_a . x + alpha * sqrt(x^T A_a^{-1} x)``.

    ``alpha`` >= 0 scales the exploration bonus, ``ridge`` > 0 is the prior precision (``A = ridge * I``
    before any data), ``gamma`` in (0, 1] discounts old observations for drifting rewards (1: no
    discount; the scheme is described below), ``dtype`` is ``"float64"`` or ``"float32"``
    (half the memory and time at large ``dim``). Deterministic: ties go to the lowest arm index, and
    ``probabilities`` is one-hot. ``select_topk`` ranks arms by their upper confidence bound.
    ``state_dict()["state"]`` holds ``A`` (design matrices), ``A_inv``, ``b``, ``theta`` (``K x d`` /
    ``K x d x d`` arrays) and ``counts`` (updates per arm).

    With ``gamma < 1`` each update first discounts what the arm knows along the new context ``x``
    (directional forgetting, Kulhavy 1987), then adds ``x`` as usual::

        A <- A - (1 - gamma) (A x)(A x)^T / (x^T A x)       so x^T A x <- gamma * x^T A x
        b <- b - (1 - gamma) (A x)(x^T b) / (x^T A x)       theta = A^{-1} b keeps its value
        A^{-1} <- A^{-1} + (1 - gamma) / gamma * x x^T / (x^T A x)      exact (Sherman-Morrison)

    The estimate keeps its value while its confidence along ``x`` shrinks, so new rewards outweigh old
    ones there: after ``m`` more observations along one direction an old one weighs ``gamma**m``.
    Directions the arm does not see keep their ridge, so ``A`` stays positive definite and its inverse
    stays exact with rank-one updates. (Scaling all of ``A`` by ``gamma`` each step would also decay
    the ridge, driving ``A`` towards singular in unseen directions; adding ``(1 - gamma) * ridge * I``
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

    def __init__(self, n_arms: int, dim: int, *, alpha: float = 1.0, ridge: float = 1.0, gamma: float = 1.0,
                 dtype: str = "float64", seed: Seed = None) -> None:
        self.alpha = check_real("alpha", alpha, low=0.0)
        super().__init__(n_arms, dim, ridge=ridge, gamma=gamma, dtype=dtype, seed=seed)

    def _hyperparams(self) -> dict[str, Any]:
        return {"dim": self._d, "alpha": self.alpha, "ridge": self.ridge, "gamma": self.gamma,
                "dtype": self.dtype}

    def _scores(self, x: FloatArray) -> FloatArray:
        """Upper confidence bounds (a variance that rounding made negative counts as 0)."""
        means, var = self._means_variances(x)
        np.maximum(var, 0.0, out=var)
        np.sqrt(var, out=var)
        var *= self.alpha
        var += means
        return var

    def scores(self, context: ArrayLike) -> FloatArray:
        """Each arm's upper confidence bound for ``context`` (what ``select`` maximizes); draws nothing.

        >>> import numpy as np
        >>> LinUCB(n_arms=2, dim=2, alpha=1.0).scores(np.array([1.0, 0.0])).tolist()
        [1.0, 1.0]
        """
        x = check_context(context, self._d, self._float)
        return np.asarray(self._scores(x), dtype=np.float64)

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
        """Choose an arm for each row of ``contexts`` (vectorized over contexts and arms)."""
        xs = self._contexts(contexts, n)
        assert isinstance(xs, np.ndarray)
        n_rows, d = xs.shape
        if (self._kind == "float64" and n_rows >= _SCREEN_MIN_ROWS and d >= _SCREEN_MIN_DIM
                and n_rows * d * d >= _SCREEN_MIN_WORK):
            return self._screened_choices(xs)
        return self._batch_choices(xs)

    def _batch_choices(self, xs: FloatArray) -> IntArray:
        """The argmax of the upper confidence bounds in the policy's dtype, the lowest arm on ties."""
        means, var = self._batch_means_variances(xs)
        scores = means + self.alpha * np.sqrt(var)
        return scores.argmax(axis=1).astype(np.int64)  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- float32 screen for select_batch
    def _screened_choices(self, xs: FloatArray) -> IntArray:
        """The float64 choices for many contexts, mostly decided in float32 (see the module docstring)."""
        n, d = xs.shape
        arms = self._distinct_arms()
        choices = np.zeros(n, dtype=np.int64)
        if len(arms) == 1:
            return choices
        screen = self._screen_setup(arms)
        if screen is None:
            return self._batch_choices(xs)
        mats, scales, var_err, mean_err = screen
        alpha = self.alpha
        trmm = _BLAS["float32"].trmm
        chunk = max(256, _SCREEN_CHUNK_NUMBERS // d)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # unusable rows, zero roots
            norms = np.sqrt(np.einsum("nd,nd->n", xs, xs))
            usable = (norms >= 2.0**-40) & (norms <= 2.0**40)
            inverse = np.divide(1.0, norms, out=np.zeros(n), where=usable)
            # Scores for the unit rows x / ||x||: the same argmax, and bounds relative to ||x|| = 1.
            scores = _one_thread_matmul(xs, np.ascontiguousarray(self._blocks[arms, d].T))
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
                choices[near] = self._select_among(xs[near], [candidates[c] for c in contenders])
            else:
                choices[near] = self._batch_choices(xs[near])
        far = np.flatnonzero(~usable & (norms > 0.0))  # all scores of a zero row are 0: arm 0
        if far.size:
            choices[far] = self._batch_choices(xs[far])
        return choices

    def _select_among(self, xs: FloatArray, contenders: list[IntArray]) -> list[int]:
        """For each row, ``select``'s choice given the only arms that can win it (ascending): their
        scores computed bitwise as ``select`` computes them."""
        d, alpha = self._d, self.alpha
        picks = []
        for x, arms in zip(xs, contenders, strict=True):
            scores = []
            for k in arms.tolist():
                out = self._products_of(k, x)
                var = _row_dots(out[None, :d], x)
                np.maximum(var, 0.0, out=var)
                np.sqrt(var, out=var)
                var *= alpha
                var += out[d]
                scores.append(float(var[0]))
            picks.append(int(arms[int(np.argmax(scores))]))
        return picks

    def _distinct_arms(self) -> list[int]:
        """The arms whose statistics differ from every lower arm's (an equal one ties and loses)."""
        blocks, d = self._blocks, self._d
        seen: dict[bytes, list[int]] = {}
        arms = []
        for k in range(self._n_arms):
            twins = seen.setdefault(blocks[k, d].tobytes(), [])
            if not any(np.array_equal(blocks[k], blocks[j]) for j in twins):
                twins.append(k)
                arms.append(k)
        return arms

    def _screen_setup(self, arms: list[int]) -> tuple[list[FloatArray], list[float], list[float],
                                                      list[float]] | None:
        """Per arm: the float32 matrix, the scale of its quadratic forms, and bounds on how far a float32
        variance and a float64 mean, for a unit context, can be from those of any float64 path
        (``select``, ``_batch_means_variances``). ``None`` when an arm's numbers are beyond what float32
        (or the bounds) can take.

        With ``S = |x|^T |M| |x|``, the variance bound adds: rounding the inputs to float32 (``7 u S``),
        the float32 ``trmm`` and dot (``gamma(2 d) S``), the float64 paths' products
        (``gamma(4 d + 16) S``), float32 underflow, and the asymmetry between the triangle and the whole
        inverse ``select`` reads below the triangle size. The mean bound: float64 products and the final
        additions and square root of both sides.
        """
        d, alpha = self._d, self.alpha
        if 2 * d * _U32 > 2.0**-6:
            return None
        var_rel = _gamma(2 * d + 8, _U32) + 8 * _U32 + _gamma(4 * d + 16, _U64) + 2.0**-60
        mats, scales, var_err, mean_err = [], [], [], []
        for k in arms:
            s_k, asym_k = self._abs_bound(k)
            t_k = float(np.linalg.norm(self._blocks[k, d]))
            if not (2.0**-600 < s_k < 2.0**600 and t_k < 2.0**600 and alpha * math.sqrt(s_k) < 2.0**600):
                return None
            e = math.frexp(s_k)[1]
            mats.append(self._screen_matrix(k, e))
            scales.append(2.0**e)
            var_err.append(s_k * var_rel * (1.0 + 2.0**-20) + asym_k + 2.0**-900)
            mean_err.append(_gamma(2 * d + 8, _U64) * t_k + 16 * _U64 * (t_k + alpha * math.sqrt(s_k))
                            + 2.0**-900)
        return mats, scales, var_err, mean_err

    def _abs_bound(self, arm: int) -> tuple[float, float]:
        """Upper bounds on ``|x|^T |M| |x|`` and ``|x^T (M - M_u) x|`` over unit ``x``, for the arm's inverse
        ``M`` and the symmetric ``M_u`` with its upper triangle (which is all of it from the triangle
        size on). Cached until the arm's next update."""
        count = self._counts[arm]
        cached = self._abs_bounds.get(arm)
        if cached is not None and cached[0] == count:
            return cached[1], cached[2]
        rows, asym_rows = _abs_row_sums(self._blocks[arm, : self._d], not self._triangle)
        asym = float(asym_rows.max()) * (1.0 + 2.0**-20)  # the factors cover the rounding of the sums
        bound = float(rows.max()) * (1.0 + 2.0**-20) + asym
        self._abs_bounds[arm] = (count, bound, asym)
        return bound, asym

    def _screen_matrix(self, arm: int, e: int) -> FloatArray:
        """float32 ``(2 triu(M) - diag(M)) * 2**-e`` for the arm's inverse ``M`` (the upper triangle, all
        that ``trmm`` reads), so that ``x^T M x = 2**e * x . (mat^T x)``."""
        d = self._d
        m = self._blocks[arm, :d]
        mat = np.empty((d, d), dtype=np.float32)
        with np.errstate(over="ignore"):  # the lower triangle is not read (stale from the triangle size on)
            np.multiply(m, 2.0 ** (1 - e), out=mat, casting="same_kind")
        np.fill_diagonal(mat, np.diagonal(m) * 2.0**-e)
        return mat

    def _configure(self) -> None:
        super()._configure()
        self._abs_bounds: dict[int, tuple[int, float, float]] = {}

    def _add_arm(self) -> None:
        super()._add_arm()
        self._abs_bounds.clear()

    def _remove_arm(self, arm: int) -> None:
        super()._remove_arm(arm)
        self._abs_bounds.clear()

    def _probabilities(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        p = np.zeros(self._n_arms)
        p[self._select(context)] = 1.0
        return p

    def _ranking_scores(self, context: FloatArray | None) -> FloatArray:
        assert context is not None
        return self._scores(context).astype(np.float64)
