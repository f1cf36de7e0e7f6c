"""Per-arm ridge regression with an exactly maintained inverse: the state LinUCB and linear Thompson
sampling share.

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
  batched scoring makes few, large ones and keeps small products on the calling thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import blas

from banditkit.base import BasePolicy, Seed
from banditkit.validation import FloatArray, IntArray, check_arm, check_context, check_real, check_reward

_DTYPES: dict[str, type[np.floating[Any]]] = {"float64": np.float64, "float32": np.float32}

# From this context dimension on, inverses are used through one triangle only (see the module docstring).
# Below it the matrices sit in cache and one stacked matmul over all arms is as fast.
_TRIANGLE_MIN_DIM = 512
# Rank-one terms of a design matrix buffered before they are added in one gemm.
_PENDING = 32
# Contexts per chunk in batched scoring: about 2**22 numbers of work space per arm, so few and large trmm
# calls (a threaded BLAS call can wait milliseconds for a core on a busy machine).
_CHUNK_NUMBERS = 2**22
# OpenBLAS keeps a matrix product with at most this many multiply-adds on the calling thread.
_ONE_THREAD_MNK = 2**18


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

    ``discount < 1`` turns on directional forgetting, documented in ``LinUCB``.
    """

    contextual: ClassVar[bool] = True

    def __init__(self, n_arms: int, dim: int, *, ridge: float = 1.0, discount: float = 1.0,
                 dtype: str = "float64", seed: Seed = None) -> None:
        super().__init__(n_arms, dim=dim, seed=seed)
        self.ridge = check_real("ridge", ridge, low=0.0, low_open=True)
        self.discount = check_real("discount", discount, low=0.0, low_open=True, high=1.0)
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
        if self.discount < 1.0:
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
        c = 1.0 - self.discount
        g = c / (self.discount * q)
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
            if key != "counts" and not np.all(np.isfinite(value)):
                raise ValueError(f"state[{key!r}] holds NaN or inf: the saved state is corrupt")
            arrays[key] = value
        for key in ("A", "A_inv"):  # each arm's design matrix and its inverse: symmetric positive definite
            m = arrays[key].astype(np.float64)  # (up to the rounding a float32 state accumulates)
            scale = np.abs(m).max(axis=(1, 2), keepdims=True) + 1e-300
            eig = np.linalg.eigvalsh((m + np.swapaxes(m, 1, 2)) / 2)
            if np.any(np.abs(m - np.swapaxes(m, 1, 2)) > 1e-3 * scale) or np.any(
                    eig[:, 0] <= -1e-4 * np.abs(eig[:, -1])):
                raise ValueError(f"state[{key!r}] is not symmetric positive definite for every arm: the saved "
                                 "state is corrupt")
        if np.any(arrays["counts"] < 0):
            raise ValueError("state['counts'] holds a negative count: the saved state is corrupt")
        self._blocks = np.empty((k, d + 1, d), dtype=self._float)
        self._blocks[:, :d, :] = arrays["A_inv"]
        self._blocks[:, d, :] = arrays["theta"]
        self._design = np.array(arrays["A"], dtype=self._float)
        self._b = np.array(arrays["b"], dtype=self._float)
        self._counts = [int(c) for c in arrays["counts"]]
        self._reset_pending()

