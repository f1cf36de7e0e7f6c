"""The RM selector: a bandit picks which reward model ranks the policy's samples into DPO pairs (LASeR).

Per batch (or per prompt) the selector encodes the prompts, asks its bandit policy for an RM, forms the
preference pairs from that RM's scores, and after the DPO step turns the step's losses into a bandit
reward (by default the paper's: the negative DPO + NLL loss), normalizes it and updates the policy
with the context it chose with.

Normalization scope. The paper maps every reward through one quantile history (``scope="global"``).
When tasks differ in their typical loss, those offsets can exceed the differences between RMs, so a
global history clips most steps of an easy task to 1 and of a hard task to 0 and the bandit sees no
difference between RMs there. ``scope="per-context"`` keeps one history per task label (when
``choose`` is given ``tasks``) or, without labels, per cluster of contexts (a seeded k-means over the
first contexts, then online nearest-centroid), so each reward is compared with rewards of like prompts.

What the policy learns from is the normalized reward minus ``reward_baseline`` (see :class:`RMSelector`):
0 reproduces the paper; the default for linear contextual policies, 0.75, keeps a zero-initialized
policy from locking onto the first RM it tries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .bandit_rewards import NoRewardSignal, RewardInputs, StepInputs, StepLosses, get_bandit_reward
from .checks import FloatArray, as_float_array, check_choice, check_rm_names
from .pairs import PairResult, make_pairs
from .scoped_normalization import SCOPES, NormalizerSpec, ScopedNormalizer, make_normalizer_factory

if TYPE_CHECKING:
    from banditkit.base import Policy

    from .encoders import ContextEncoder

GRANULARITIES = ("batch", "instance")
AUTO_BASELINE = 0.75
"""``reward_baseline`` for contextual policies when not given (see :class:`RMSelector`)."""


@runtime_checkable
class Selector(Protocol):
    """What the training loop needs from an RM selector (LASeR's bandit or a baseline).

    Per batch the loop calls ``choose``, scores each prompt's responses with the RMs named for it,
    calls ``pairs_for`` per prompt, splits the batch with ``groups`` into DPO steps and, after each
    step, calls ``feedback`` with the :class:`~laser_adapters.bandit_rewards.StepInputs` its reward
    ``needs`` (names of optional fields). ``new_iteration`` is called at the start of each iteration
    (0-based).
    """

    name: str
    rm_names: list[str]
    needs: frozenset[str]

    def choose(self, prompts: Sequence[str], *, tasks: Sequence[str] | None = None,
               contexts: Any = None) -> list[tuple[str, ...]]:
        """Per prompt, the RM names whose scores are needed (the routed RM first). ``contexts``: the
        prompts' features when they are already at hand (e.g. read from generation), so no encoder runs."""
        ...

    def pairs_for(self, index: int, prompt: str, responses: Sequence[str], scores: Mapping[str, Any],
                  max_pairs: int) -> PairResult:
        """The preference pairs for prompt ``index`` of the last ``choose``, from the needed RMs' scores."""
        ...

    def groups(self, choices: list[tuple[str, ...]]) -> list[tuple[str, list[int]]]:
        """How to split the batch into DPO steps: ``(label, prompt indices)``."""
        ...

    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """Learn from one DPO step on a group; returns a JSON-ready dict to log."""
        ...

    def new_iteration(self, iteration: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# --------------------------------------------------------------------------- routing base
@dataclass
class _Batch:
    prompts: list[str]
    tasks: list[str] | None
    rms: list[str]
    contexts: FloatArray | None = None
    batch_context: FloatArray | None = None
    arm_scores: list[list[float | None] | None] = field(default_factory=list)
    seen_scores: dict[int, FloatArray] = field(default_factory=dict)


class RoutingSelector:
    """Shared plumbing for selectors that route each prompt to one RM (LASeR and simple baselines).

    Subclasses implement ``_route(prompts, tasks) -> list[str]`` (one RM per prompt) and ``feedback``.
    """

    name: str
    rm_names: list[str]
    granularity: str

    def __init__(self, rm_names: Sequence[str], *, name: str, granularity: str = "batch") -> None:
        self.rm_names = check_rm_names(rm_names)
        self.name = name
        self.granularity = check_choice("granularity", granularity, GRANULARITIES)
        self.iteration = 0
        self._batch: _Batch | None = None
        self.needs: frozenset[str] = frozenset()  # baselines learn nothing, so read nothing

    # -- to implement
    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        raise NotImplementedError

    def _needed(self, index: int, rm: str) -> tuple[str, ...]:
        return (rm,)

    # -- Selector protocol
    def choose(self, prompts: Sequence[str], *, tasks: Sequence[str] | None = None,
               contexts: Any = None) -> list[tuple[str, ...]]:
        """Route the batch; per prompt the RM names whose scores are needed, the routed RM first.

        ``contexts``: optional precomputed ``(n_prompts, dim)`` features used instead of the encoder."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, got a single string; wrap it in a list")
        plist = list(prompts)
        if not plist:
            raise ValueError("choose needs at least one prompt, got an empty batch")
        tlist = None if tasks is None else [str(t) for t in tasks]
        if tlist is not None and len(tlist) != len(plist):
            raise ValueError(f"got {len(plist)} prompts but {len(tlist)} task labels")
        self._batch = _Batch(prompts=plist, tasks=tlist, rms=[])
        if contexts is not None:
            self._batch.contexts = self._check_contexts(contexts, len(plist))
        rms = self._route(plist, tlist)
        self._batch.rms = rms
        return [self._needed(i, rm) for i, rm in enumerate(rms)]

    @property
    def context_dim(self) -> int | None:
        """The dimension contexts must have (None: any; baselines read no contexts)."""
        return None

    def _check_contexts(self, contexts: Any, n: int) -> FloatArray:
        x = as_float_array(contexts, "contexts")
        dim = self.context_dim
        if x.ndim != 2 or x.shape[0] != n or (dim is not None and x.shape[1] != dim):
            raise ValueError(f"contexts must have shape ({n}, {dim if dim is not None else 'dim'}), "
                             f"got {x.shape}")
        return x

    def _require_batch(self) -> _Batch:
        if self._batch is None:
            raise ValueError(f"{self.name}: call choose(prompts) before pairs_for/groups/feedback")
        return self._batch

    def _check_index(self, index: int) -> int:
        b = self._require_batch()
        n = len(b.prompts)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise ValueError(f"prompt index {index!r} is out of range: the last batch had {n} prompts")
        return int(index)

    def routed_rm(self, index: int) -> str:
        """The RM chosen for prompt ``index`` of the last batch."""
        return self._require_batch().rms[self._check_index(index)]

    def pairs_for(self, index: int, prompt: str, responses: Sequence[str], scores: Mapping[str, Any],
                  max_pairs: int) -> PairResult:
        """Pairs for prompt ``index`` ranked by the RM chosen for it (``scores[rm]``)."""
        b = self._require_batch()
        i = self._check_index(index)
        if prompt != b.prompts[i]:
            raise ValueError(f"prompt {i} is {b.prompts[i][:60]!r} in the last batch, got {prompt[:60]!r}: "
                             "pass the index of the prompt as given to choose")
        rm = b.rms[i]
        if rm not in scores:
            raise ValueError(f"scores for prompt {i} lack RM {rm!r} (got {sorted(scores)}); score it with "
                             "the RMs that choose named for it")
        s = as_float_array(scores[rm], f"scores of {rm!r} for prompt {i}")
        b.seen_scores[i] = s
        return make_pairs(prompt, responses, s, max_pairs)

    def groups(self, choices: list[tuple[str, ...]]) -> list[tuple[str, list[int]]]:
        """One group (the RM) under batch granularity; under instance granularity prompts grouped by RM."""
        b = self._require_batch()
        if len(choices) != len(b.prompts) or any(not c or c[0] != rm for c, rm in zip(choices, b.rms,
                                                                                        strict=False)):
            raise ValueError("choices do not match the last choose call: pass what choose returned")
        if self.granularity == "batch":
            return [(b.rms[0], list(range(len(b.rms))))]
        return [(rm, [i for i, r in enumerate(b.rms) if r == rm]) for rm in self.rm_names if rm in b.rms]

    def _check_group(self, label: str, prompt_indices: Sequence[int]) -> list[int]:
        b = self._require_batch()
        idx = [self._check_index(i) for i in prompt_indices]
        if not idx:
            raise ValueError("feedback got no prompt indices")
        wrong = [i for i in idx if b.rms[i] != label]
        if wrong:
            raise ValueError(f"feedback label {label!r} does not match the RM chosen for prompts {wrong} "
                             f"({sorted({b.rms[i] for i in wrong})}); pass a label from groups()")
        return idx

    def new_iteration(self, iteration: int) -> None:
        """Mark the start of iteration ``iteration`` (0-based)."""
        if isinstance(iteration, bool) or not isinstance(iteration, (int, np.integer)) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0, got {iteration!r}")
        self.iteration = int(iteration)

    def _base_state(self) -> dict[str, Any]:
        return {"selector": type(self).__name__, "name": self.name, "rm_names": list(self.rm_names),
                "granularity": self.granularity, "iteration": self.iteration}

    def _load_base_state(self, state: Mapping[str, Any]) -> None:
        if state.get("selector") != type(self).__name__:
            raise ValueError(f"state is for {state.get('selector')!r}, not {type(self).__name__}")
        if list(state["rm_names"]) != self.rm_names:
            raise ValueError(f"state is for RMs {state['rm_names']}, this selector has {self.rm_names}")
        self.granularity = check_choice("granularity", state["granularity"], GRANULARITIES)
        self.iteration = int(state["iteration"])
        self._batch = None


# --------------------------------------------------------------------------- LASeR
class RMSelector(RoutingSelector):
    """LASeR's selector: a bandit policy picks the RM from the prompts' context.

    ``granularity="batch"`` (the paper): the batch's context is the mean of its prompts' encodings,
    one RM for the batch, one update per step. ``"instance"``: one RM per prompt, prompts grouped by
    RM, one update per prompt with its own context and reward (per-pair losses mapped to prompts by
    ``inputs.pair_prompt``). ``reward`` names a reward of :mod:`laser_adapters.bandit_rewards`;
    ``scope`` picks the normalization scope (see the module docstring); without task labels,
    ``per-context`` clusters contexts into ``n_clusters`` groups (k-means seeded by ``seed``) after
    ``cluster_warmup`` steps (default ``4 * n_clusters``), normalizing globally until then. With
    ``reward="agreement"`` the first ``probe_size`` prompts of each batch need every RM's scores.

    ``reward_baseline``: the policy learns from ``normalized - reward_baseline``. A linear policy's
    estimates start at 0; with rewards in [0, 1] an untried arm looks like the worst one, and at a
    small ``alpha`` the first arm played keeps winning (lock-in). With a baseline of 0.75 an arm must
    beat the 75th percentile of its scope's history to look better than an untried arm, so each arm
    gets tried in each region of context space and wrong arms (normalized near 0) fall well below
    the right one (near 0.5 once it is the one mostly played). ``None`` (default): 0.75 for
    contextual policies, 0 for context-free ones (Beta-Bernoulli Thompson sampling and EXP3 need
    rewards in [0, 1]); ``reward_baseline=0`` is the paper's setting.

    >>> from banditkit.policies.linucb import LinUCB
    >>> from laser_adapters.encoders import HashingEncoder
    >>> from laser_adapters.dpo import StepResult
    >>> enc = HashingEncoder(dim=16)
    >>> sel = RMSelector(LinUCB(2, 16, alpha=0.1), enc, ["rm-a", "rm-b"])
    >>> choices = sel.choose(["2+3=?", "7+1=?"])
    >>> choices
    [('rm-a',), ('rm-a',)]
    >>> sel.groups(choices)
    [('rm-a', [0, 1])]
    >>> pr = sel.pairs_for(0, "2+3=?", ["5", "6", "4"], {"rm-a": np.array([1.0, 0.0, 0.5])}, max_pairs=1)
    >>> [(p["chosen"], p["rejected"]) for p in pr.pairs]
    [('5', '6')]
    >>> z = np.zeros(1)
    >>> result = StepResult(loss=0.8, losses=np.array([0.8]), dpo_losses=np.array([0.69]),
    ...                     nll_losses=np.array([0.11]), chosen_rewards=z, rejected_rewards=z,
    ...                     dpo_loss=0.69, nll_loss=0.11)
    >>> log = sel.feedback("rm-a", [0, 1], result)
    >>> log["rm"], log["raw_reward"], log["normalized_reward"], log["scope_key"]
    ('rm-a', -0.8, 0.5, 'global')
    """

    def __init__(self, policy: Policy, encoder: ContextEncoder | None, rm_names: Sequence[str], *,
                 normalizer: NormalizerSpec = "quantile", granularity: str = "batch", reward: str = "dpo+nll",
                 scope: str = "global", n_clusters: int = 4, probe_size: int = 2, seed: int = 0,
                 cluster_warmup: int | None = None, reward_baseline: float | None = None,
                 name: str = "laser") -> None:
        super().__init__(rm_names, name=name, granularity=granularity)
        if policy.n_arms != len(self.rm_names):
            raise ValueError(f"the policy has {policy.n_arms} arms but there are {len(self.rm_names)} RMs "
                             f"{self.rm_names}; build it with n_arms={len(self.rm_names)}")
        self.policy = policy
        self.encoder = encoder
        self.contextual = bool(getattr(policy, "contextual", False))  # not part of the Policy protocol
        if self.contextual:
            if encoder is None:
                raise ValueError(f"{type(policy).__name__} is contextual: pass a context encoder")
            pdim = getattr(policy, "dim", None)
            if pdim is not None and pdim != encoder.dim:
                raise ValueError(f"encoder dim {encoder.dim} != policy dim {pdim}; build the policy with "
                                 f"dim={encoder.dim}")
        self._set_reward(reward)
        if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 0:
            raise ValueError(f"probe_size must be an int >= 0, got {probe_size!r}")
        if reward == "agreement" and probe_size < 1:
            raise ValueError("reward 'agreement' needs probe_size >= 1 (prompts scored by every RM)")
        if reward == "agreement" and len(self.rm_names) < 2:
            raise ValueError("reward 'agreement' needs at least two RMs")
        self.probe_size = probe_size
        self.seed = seed
        self.normalization = ScopedNormalizer(make_normalizer_factory(normalizer), scope=scope,
                                              n_clusters=n_clusters, warmup=cluster_warmup, seed=seed)
        self.scope = scope
        if reward_baseline is None:
            reward_baseline = AUTO_BASELINE if self.contextual else 0.0
        self.reward_baseline = float(reward_baseline)
        if not np.isfinite(self.reward_baseline):
            raise ValueError(f"reward_baseline must be finite, got {reward_baseline!r}")

    @property
    def context_dim(self) -> int | None:
        """The encoder's dimension, which given contexts must match (None without an encoder)."""
        return None if self.encoder is None else self.encoder.dim

    def _set_reward(self, name: str) -> None:
        reward = get_bandit_reward(name)
        self.reward_name, self.reward_fn, self.needs = reward.name, reward.fn, reward.reads

    # -- routing
    def _needs_contexts(self, tasks: list[str] | None) -> bool:
        return self.contextual or (self.scope == "per-context" and tasks is None)

    def _encode(self, prompts: list[str]) -> FloatArray:
        if self.encoder is None:
            raise ValueError("per-context normalization without task labels needs contexts: pass tasks to "
                             "choose or give the selector an encoder")
        x = np.asarray(self.encoder.encode(prompts), dtype=np.float64)
        if x.shape != (len(prompts), self.encoder.dim):
            raise ValueError(f"encoder returned shape {x.shape}, expected "
                             f"({len(prompts)}, {self.encoder.dim})")
        return as_float_array(x, "encoded contexts")

    def _arm_scores(self, context: FloatArray | None) -> list[float | None]:
        """The policy's per-arm scores when it chose (``Policy.arm_scores``: UCB bounds, posterior means,
        EXP3's probabilities, ...), for logging; non-finite values (an unplayed arm's infinite bound) are
        logged as ``None``."""
        arr = np.asarray(self.policy.arm_scores(context), dtype=np.float64).reshape(-1)
        return [float(v) if np.isfinite(v) else None for v in arr]

    def _route(self, prompts: list[str], tasks: list[str] | None) -> list[str]:
        b = self._require_batch()
        if self._needs_contexts(tasks):
            if b.contexts is None:
                b.contexts = self._encode(prompts)
            b.batch_context = b.contexts.mean(axis=0)
        if self.granularity == "batch":
            arm = int(self.policy.select(b.batch_context))
            b.arm_scores = [self._arm_scores(b.batch_context)]
            return [self.rm_names[arm]] * len(prompts)
        if b.contexts is not None:
            arms = self.policy.select_batch(b.contexts)
        else:
            arms = self.policy.select_batch(None, n=len(prompts))
        ctxs = b.contexts if b.contexts is not None else [None] * len(prompts)
        b.arm_scores = [self._arm_scores(c) for c in ctxs]
        return [self.rm_names[int(a)] for a in arms]

    def _needed(self, index: int, rm: str) -> tuple[str, ...]:
        if self.reward_name == "agreement" and index < self.probe_size:
            return (rm, *[n for n in self.rm_names if n != rm])
        return (rm,)

    # -- learning
    def feedback(self, label: str, prompt_indices: list[int], result: StepLosses,
                 inputs: StepInputs | None = None) -> dict[str, Any]:
        """Reward the RM ``label`` for the DPO step on ``prompt_indices`` and update the policy.

        Returns a dict to log: ``arm``, ``rm``, ``raw_reward``, ``normalized_reward``, ``policy_reward``
        (what the policy learned from, see ``reward_baseline``), ``scope_key``
        (means and joined keys under instance granularity, with ``per_prompt`` details), ``arm_scores``
        (the policy's per-arm scores when it chose, if it exposes them; else ``None``).
        """
        b = self._require_batch()
        idx = self._check_group(label, prompt_indices)
        inputs = StepInputs() if inputs is None else inputs
        n_pairs = len(np.asarray(result.losses).reshape(-1))
        if n_pairs == 0:
            raise ValueError("the step had no pairs: skip feedback (and the DPO step) for a group with no "
                             "pairs")
        arm = self.rm_names.index(label)
        units: list[tuple[list[int], NDArray[np.int64] | None]]
        skipped: list[int] = []
        if self.granularity == "batch":
            units = [(idx, None)]
        else:
            units, skipped = self._instance_units(idx, inputs, n_pairs)
        raws, units, unrewarded = self._rewards(label, idx, units, result, inputs)
        skipped = sorted(skipped + unrewarded)
        tasks, contexts = self._unit_scope_inputs(units)
        normed, keys = self.normalization.step(raws, tasks=tasks, contexts=contexts)
        log: dict[str, Any] = {"selector": self.name, "granularity": self.granularity,
                               "reward_fn": self.reward_name, "iteration": self.iteration,
                               "arm": arm, "rm": label}
        fed = [v - self.reward_baseline for v in normed]
        if self.granularity == "batch":
            self.policy.update(arm, fed[0], b.batch_context)
            log.update(raw_reward=raws[0], normalized_reward=normed[0], policy_reward=fed[0],
                       scope_key=keys[0], arm_scores=b.arm_scores[0] if b.arm_scores else None)
            return log
        arms = np.full(len(units), arm, dtype=np.int64)
        self.policy.update_batch(arms, np.array(fed), contexts)
        log.update(raw_reward=float(np.mean(raws)), normalized_reward=float(np.mean(normed)),
                   policy_reward=float(np.mean(fed)),
                   scope_key="+".join(sorted(set(keys))), skipped_prompts=skipped,
                   per_prompt=[{"index": ps[0], "raw_reward": r, "normalized_reward": nr, "scope_key": k,
                                "arm_scores": b.arm_scores[ps[0]] if b.arm_scores else None}
                               for (ps, _), r, nr, k in zip(units, raws, normed, keys, strict=True)])
        return log

    Unit = tuple[list[int], NDArray[np.int64] | None]

    def _rewards(self, label: str, idx: list[int], units: list[Unit], result: StepLosses,
                 inputs: StepInputs) -> tuple[list[float], list[Unit], list[int]]:
        """Raw rewards of the units that have a reward signal; the prompts of those that have none."""
        b = self._require_batch()
        raws: list[float] = []
        rewarded: list[RMSelector.Unit] = []
        skipped: list[int] = []
        last_error: Exception | None = None
        for ps, pi in units:
            unit = RewardInputs(result=result, rm=label, rm_names=self.rm_names, prompt_indices=ps,
                                  pair_index=pi, rm_scores=b.seen_scores, step=inputs)
            try:
                raw = self.reward_fn(unit)
            except NoRewardSignal as exc:
                if self.granularity == "batch":
                    raise
                skipped.append(ps[0])
                last_error = exc
                continue
            raws.append(float(as_float_array(raw, f"reward {self.reward_name!r}")))
            rewarded.append((ps, pi))
        if not rewarded:
            raise NoRewardSignal(f"no prompt of group {label!r} {idx} could be rewarded: {last_error}")
        return raws, rewarded, skipped

    def _instance_units(self, idx: list[int], inputs: StepInputs,
                        n_pairs: int) -> tuple[list[tuple[list[int], NDArray[np.int64] | None]], list[int]]:
        if inputs.pair_prompt is None:
            raise ValueError("instance granularity needs inputs.pair_prompt: for each pair of the step, "
                             "the index of its prompt in the batch")
        pp = np.asarray(inputs.pair_prompt, dtype=np.int64).reshape(-1)
        if len(pp) != n_pairs:
            raise ValueError(f"inputs.pair_prompt has {len(pp)} entries but the step has {n_pairs} pairs")
        stray = sorted(set(pp.tolist()) - set(idx))
        if stray:
            raise ValueError(f"inputs.pair_prompt names prompts {stray} outside this group {idx}")
        units: list[tuple[list[int], NDArray[np.int64] | None]] = []
        skipped: list[int] = []
        for p in idx:
            where = np.flatnonzero(pp == p).astype(np.int64)
            if len(where):
                units.append(([p], where))
            else:
                skipped.append(p)
        return units, skipped

    def _unit_scope_inputs(self, units: list[tuple[list[int], NDArray[np.int64] | None]]
                           ) -> tuple[list[str | None], FloatArray | None]:
        b = self._require_batch()
        if self.granularity == "batch":
            task = None if b.tasks is None else "+".join(sorted(set(b.tasks)))
            ctx = None if b.batch_context is None else b.batch_context[None, :]
            return [task], ctx
        rows = [ps[0] for ps, _ in units]
        tasks: list[str | None] = [None if b.tasks is None else b.tasks[p] for p in rows]
        return tasks, None if b.contexts is None else b.contexts[rows]

    # -- state
    def state_dict(self) -> dict[str, Any]:
        """Plain data: the policy's state dict, the normalizers' states and the context clusters."""
        state = self._base_state()
        state.update(reward=self.reward_name, scope=self.scope, probe_size=self.probe_size,
                     reward_baseline=self.reward_baseline, policy=self.policy.state_dict(),
                     normalization=self.normalization.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (the selector must be built with the same RMs)."""
        self._load_base_state(state)
        self._set_reward(state["reward"])
        self.scope = check_choice("scope", state["scope"], SCOPES)
        self.probe_size = int(state["probe_size"])
        self.reward_baseline = float(state["reward_baseline"])
        self.policy.load_state_dict(state["policy"])
        self.normalization.load_state_dict(state["normalization"])


