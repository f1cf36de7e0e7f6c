"""Normalization of bandit rewards by scope: one quantile (or min-max, z-score) history for all steps, or one
per task label or per cluster of contexts (see :mod:`laser_adapters.selector` for why)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .checks import FloatArray, check_choice

if TYPE_CHECKING:
    from banditkit.normalizers import Normalizer

NormalizerSpec = str | Callable[[], "Normalizer"]
SCOPES = ("global", "per-context")
NORMALIZERS = ("quantile", "minmax", "zscore")


def make_normalizer_factory(spec: NormalizerSpec) -> Callable[[], Normalizer]:
    """Turn ``"quantile"`` (the paper's 20th/80th percentiles), ``"minmax"``, ``"zscore"`` or a
    zero-argument factory into a factory of fresh normalizers."""
    if callable(spec):
        return spec
    from banditkit.normalizers import MinMaxNormalizer, QuantileNormalizer, ZScoreNormalizer

    table: dict[str, Callable[[], Normalizer]] = {
        "quantile": QuantileNormalizer, "minmax": MinMaxNormalizer, "zscore": ZScoreNormalizer,
    }
    if spec not in table:
        raise ValueError(f"unknown normalizer {spec!r}; valid: {', '.join(NORMALIZERS)} or a factory "
                         "callable")
    return table[spec]


class ContextClusters:
    """Seeded k-means over the first ``warmup`` steps' contexts, then online nearest-centroid.

    Until fitted, ``assign`` buffers its inputs and returns ``None``; ``fit`` runs k-means++ (from
    ``seed``) and Lloyd iterations on the buffer, after which each assigned context moves its
    centroid by a running mean (MacQueen). Cluster ids never change once fitted, so per-cluster reward
    histories stay meaningful.

    >>> rng = np.random.default_rng(0)
    >>> cl = ContextClusters(2, seed=0)
    >>> _ = cl.assign(np.r_[rng.normal(0, 0.1, (5, 2)), rng.normal(5, 0.1, (5, 2))])
    >>> labels = cl.fit()
    >>> cl.assign(np.array([[5.0, 5.0], [0.0, 0.0]])) == [labels[-1], labels[0]]
    True
    """

    def __init__(self, n_clusters: int, *, seed: int | np.random.Generator | None = 0) -> None:
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
            raise ValueError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
        self.n_clusters = n_clusters
        self._rng = np.random.default_rng(seed)
        self.centroids: FloatArray | None = None
        self.counts: NDArray[np.int64] | None = None
        self._buffer: list[FloatArray] = []

    @property
    def fitted(self) -> bool:
        return self.centroids is not None

    @property
    def buffer(self) -> FloatArray:
        return np.array(self._buffer, dtype=np.float64)

    def assign(self, xs: FloatArray) -> list[int | None]:
        """Cluster id of each row (moving its centroid), or ``None`` for each while not fitted (buffered)."""
        xs = np.atleast_2d(np.asarray(xs, dtype=np.float64))
        if self.centroids is None or self.counts is None:
            self._buffer.extend(xs.copy())
            return [None] * len(xs)
        out: list[int | None] = []
        for x in xs:
            j = int(np.argmin(((self.centroids - x) ** 2).sum(axis=1)))
            self.counts[j] += 1
            self.centroids[j] += (x - self.centroids[j]) / self.counts[j]
            out.append(j)
        return out

    def fit(self, n_iter: int = 50) -> list[int]:
        """Fit the centroids on the buffer; returns each buffered row's cluster id (buffer order)."""
        x = self.buffer
        if len(x) == 0:
            raise ValueError("no contexts to cluster yet: assign some before fit")
        k = min(self.n_clusters, len(np.unique(x, axis=0)))
        cent = self._kmeanspp(x, k)
        labels = np.zeros(len(x), dtype=np.int64)
        for _ in range(n_iter):
            labels = ((x[:, None, :] - cent[None]) ** 2).sum(axis=2).argmin(axis=1)
            new = np.array([x[labels == j].mean(axis=0) if (labels == j).any() else cent[j]
                            for j in range(k)])
            if np.allclose(new, cent):
                break
            cent = new
        self.centroids = cent
        self.counts = np.bincount(labels, minlength=k).astype(np.int64)
        self._buffer = []
        return [int(v) for v in labels]

    def _kmeanspp(self, x: FloatArray, k: int) -> FloatArray:
        cent = [x[int(self._rng.integers(len(x)))]]
        for _ in range(1, k):
            d2 = ((x[:, None, :] - np.array(cent)[None]) ** 2).sum(axis=2).min(axis=1)
            cent.append(x[int(self._rng.choice(len(x), p=d2 / d2.sum()))])
        return np.array(cent, dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        return {
            "n_clusters": self.n_clusters,
            "centroids": None if self.centroids is None else self.centroids.tolist(),
            "counts": None if self.counts is None else self.counts.tolist(),
            "buffer": [b.tolist() for b in self._buffer],
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.n_clusters = int(state["n_clusters"])
        c = state["centroids"]
        self.centroids = None if c is None else np.array(c, dtype=np.float64)
        self.counts = None if state["counts"] is None else np.array(state["counts"], dtype=np.int64)
        self._buffer = [np.array(b, dtype=np.float64) for b in state["buffer"]]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]


class ScopedNormalizer:
    """Reward normalization with one history per scope key.

    ``scope="global"``: one key, ``"global"`` (the paper). ``scope="per-context"``: ``"task:<label>"``
    when the unit has a task label (a batch of several tasks uses the sorted labels joined by ``+``),
    else ``"cluster:<id>"`` from :class:`ContextClusters`. Until the clusters are fitted (after
    ``warmup`` steps) unlabelled rewards use the key ``"warmup"``; at fitting time each cluster's history
    is seeded with the buffered rewards of its members, in order.

    >>> from banditkit.normalizers import QuantileNormalizer
    >>> norm = ScopedNormalizer(QuantileNormalizer, scope="per-context")
    >>> for r in [-1.4, -1.5, -1.3]:
    ...     _ = norm.step([r], tasks=["math"])
    >>> for r in [-0.9, -1.0, -0.8]:
    ...     _ = norm.step([r], tasks=["yesno"])
    >>> norm.step([-1.3], tasks=["math"]), norm.step([-1.3], tasks=["yesno"])
    (([1.0], ['task:math']), ([0.0], ['task:yesno']))
    """

    def __init__(self, factory: Callable[[], Normalizer], *, scope: str = "global", n_clusters: int = 4,
                 warmup: int | None = None, seed: int | np.random.Generator | None = 0) -> None:
        self.factory = factory
        self.scope = check_choice("scope", scope, SCOPES)
        self.warmup = 4 * n_clusters if warmup is None else int(warmup)
        if self.warmup < 1:
            raise ValueError(f"cluster warmup must be >= 1 step, got {warmup}")
        self.clusters = ContextClusters(n_clusters, seed=seed)
        self.normalizers: dict[str, Normalizer] = {}
        self._warm_rewards: list[float] = []
        self._warm_steps = 0

    def _get(self, key: str) -> Normalizer:
        if key not in self.normalizers:
            self.normalizers[key] = self.factory()
        return self.normalizers[key]

    def step(self, rewards: Sequence[float], *, tasks: Sequence[str | None] | None = None,
             contexts: FloatArray | None = None) -> tuple[list[float], list[str]]:
        """Normalize one step's rewards (one per unit, with its task label or context); returns the
        normalized rewards and their scope keys."""
        n = len(rewards)
        task_list: list[str | None] = [None] * n if tasks is None else list(tasks)
        if len(task_list) != n:
            raise ValueError(f"got {n} rewards but {len(task_list)} task labels")
        keys: list[str | None] = []
        for t in task_list:
            if self.scope == "global":
                keys.append("global")
            elif t is not None:
                keys.append(f"task:{t}")
            else:
                keys.append(None)
        unlabelled = [i for i, k in enumerate(keys) if k is None]
        if unlabelled:
            if contexts is None:
                raise ValueError("per-context normalization without task labels needs contexts: pass tasks "
                                 "to choose or give the selector an encoder")
            ctx = np.atleast_2d(np.asarray(contexts, dtype=np.float64))
            if len(ctx) != n:
                raise ValueError(f"got {n} rewards but {len(ctx)} contexts")
            ids = self.clusters.assign(ctx[unlabelled])
            for i, j in zip(unlabelled, ids, strict=True):
                keys[i] = "warmup" if j is None else f"cluster:{j}"
        out = [float(self._get(str(k))(float(r))) for k, r in zip(keys, rewards, strict=True)]
        if unlabelled and not self.clusters.fitted:
            self._warm_rewards.extend(float(rewards[i]) for i in unlabelled)
            self._warm_steps += 1
            if self._warm_steps >= self.warmup:
                self._fit_clusters()
        return out, [str(k) for k in keys]

    def _fit_clusters(self) -> None:
        labels = self.clusters.fit()
        for j, r in zip(labels, self._warm_rewards, strict=True):
            self._get(f"cluster:{j}").observe(r)
        self._warm_rewards = []
        self.normalizers.pop("warmup", None)

    def state_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "warmup": self.warmup,
            "normalizers": {k: v.state_dict() for k, v in self.normalizers.items()},
            "clusters": self.clusters.state_dict(),
            "warm_rewards": list(self._warm_rewards),
            "warm_steps": self._warm_steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scope = check_choice("scope", state["scope"], SCOPES)
        self.warmup = int(state["warmup"])
        self.normalizers = {}
        for k, v in state["normalizers"].items():
            self._get(k).load_state_dict(v)
        self.clusters.load_state_dict(state["clusters"])
        self._warm_rewards = [float(r) for r in state["warm_rewards"]]
        self._warm_steps = int(state["warm_steps"])
