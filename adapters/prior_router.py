"""A BayesianRouter-style selector: per-task Beta priors over each RM learned from a few labelled dev prompts,
then online Thompson sampling with a label-free reward.

BayesianRouter (Wu & Lu, arXiv 2510.02850) learns per-RM priors offline from a small labelled set and
routes each query online by Thompson sampling, rewarded by the negative DPO loss. Here the prior of RM ``r``
on task ``t`` is ``Beta(1 + w * right, 1 + w * wrong)``, where ``right``/``wrong`` count the dev prompts of
``t`` on which ``r``'s top-ranked sample was right or wrong and ``w`` (``prior_weight``) scales how much
the dev set counts against the online evidence. Online, each step's raw reward (``reward``, by default the
paper's negative DPO + NLL loss, which reads no labels) is normalized per task into [0, 1] and added as a
fractional success (``r``) and failure (``1 - r``). Tasks without a prior start from ``Beta(1, 1)``.

>>> sel = PriorRouterSelector(["rm-a", "rm-b"], {"math": {"rm-a": (2, 8), "rm-b": (9, 1)}}, seed=0)
>>> sel.choose(["2+2?", "3+4?"], tasks=["math", "math"])
[('rm-b',), ('rm-b',)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .bandit_rewards import RewardInputs, StepInputs, StepLosses, get_bandit_reward
from .checks import as_float_array
from .scoped_normalization import NormalizerSpec, ScopedNormalizer, make_normalizer_factory
from .selector import RoutingSelector

#: Per task, per RM: (right, wrong) counts of the RM's top-ranked dev sample.
Priors = Mapping[str, Mapping[str, tuple[float, float]]]
GLOBAL_KEY = "all"


class PriorRouterSelector(RoutingSelector):
    """Thompson sampling per task over Beta posteriors started from dev-set priors (see the module docstring).

    One RM per batch, keyed by the batch's task (its most frequent one; ``"all"`` when ``choose`` gets no
    tasks). ``needs`` follows ``reward``; the reward must not read labels unless the run means to.
    """

    def __init__(self, rm_names: Sequence[str], priors: Priors | None = None, *, seed: int = 0,
                 reward: str = "dpo+nll", normalizer: NormalizerSpec = "quantile", prior_weight: float = 1.0,
                 name: str = "prior-router") -> None:
        super().__init__(rm_names, name=name)
        if not np.isfinite(prior_weight) or prior_weight < 0:
            raise ValueError(f"prior_weight must be a finite number >= 0, got {prior_weight!r}")
        self.prior_weight = float(prior_weight)
        self.priors = {str(t): {str(rm): (float(a), float(b)) for rm, (a, b) in by_rm.items()}
                       for t, by_rm in (priors or {}).items()}
        unknown = sorted({rm for by_rm in self.priors.values() for rm in by_rm} - set(self.rm_names))
        if unknown:
            raise ValueError(f"priors name RMs {unknown} that are not among {self.rm_names}")
        self._set_reward(reward)
        self.normalization = ScopedNormalizer(make_normalizer_factory(normalizer), scope="per-context", seed=seed)
        self._rng = np.random.default_rng(seed)
        self._alpha: dict[str, np.ndarray] = {}
        self._beta: dict[str, np.ndarray] = {}
        self._key: str = GLOBAL_KEY

    def _set_reward(self, name: str) -> None:
        spec = get_bandit_reward(name)
        self.reward_name, self._reward_fn, self.needs = spec.name, spec.fn, spec.reads

    def _posterior(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        if key not in self._alpha:
            prior = self.priors.get(key, {})
            right = np.array([prior.get(rm, (0.0, 0.0))[0] for rm in self.rm_names])
            wrong = np.array([prior.get(rm, (0.0, 0.0))[1] for rm in self.rm_names])
            self._alpha[key] = 1.0 + self.prior_weight * right
            self._beta[key] = 1.0 + self.prior_weight * wrong
        return self._alpha[key], self._beta[key]

    def posterior_means(self, task: str = GLOBAL_KEY) -> dict[str, float]:
        """Each RM's posterior mean quality on ``task``."""
        alpha, beta = self._posterior(task)
        return {rm: float(a / (a + b)) for rm, a, b in zip(self.rm_names, alpha, beta, strict=True)}

    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        if tasks:
            values, counts = np.unique(np.array(tasks), return_counts=True)
            self._key = str(values[int(np.argmax(counts))])
        else:
            self._key = GLOBAL_KEY
        alpha, beta = self._posterior(self._key)
        arm = int(np.argmax(self._rng.beta(alpha, beta)))
        return [self.rm_names[arm]] * len(prompts)

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """Add the step's normalized reward to the chosen RM's posterior for the batch's task."""
        b = self._require_batch()
        idx = self._check_group(label, prompt_indices)
        unit = RewardInputs(result=result, rm=label, rm_names=self.rm_names, prompt_indices=idx,
                            rm_scores=b.seen_scores, step=inputs or StepInputs())
        raw = float(as_float_array(self._reward_fn(unit), f"reward {self.reward_name!r}"))
        (normed,), (scope_key,) = self.normalization.step([raw], tasks=[self._key])
        arm = self.rm_names.index(label)
        alpha, beta = self._posterior(self._key)
        alpha[arm] += normed
        beta[arm] += 1.0 - normed
        return {"selector": self.name, "rm": label, "arm": arm, "task": self._key, "raw_reward": raw,
                "normalized_reward": normed, "scope_key": scope_key, "iteration": self.iteration,
                "arm_scores": [float(a / (a + b_)) for a, b_ in zip(alpha, beta, strict=True)]}

    def state_dict(self) -> dict[str, Any]:
        """Plain data: priors, posteriors per task, the generator and the normalizers."""
        return {**self._base_state(), "reward": self.reward_name, "prior_weight": self.prior_weight,
                "priors": {t: {rm: list(v) for rm, v in by.items()} for t, by in self.priors.items()},
                "alpha": {k: v.tolist() for k, v in self._alpha.items()},
                "beta": {k: v.tolist() for k, v in self._beta.items()},
                "rng": self._rng.bit_generator.state, "normalization": self.normalization.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the selector must be built over the same RMs)."""
        self._load_base_state(state)
        self._set_reward(state["reward"])
        self.prior_weight = float(state["prior_weight"])
        self.priors = {t: {rm: (float(v[0]), float(v[1])) for rm, v in by.items()}
                       for t, by in state["priors"].items()}
        self._alpha = {k: np.array(v, dtype=np.float64) for k, v in state["alpha"].items()}
        self._beta = {k: np.array(v, dtype=np.float64) for k, v in state["beta"].items()}
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self.normalization.load_state_dict(state["normalization"])
