"""Every size and budget of the built-in world: the policy's, the reward models' and the build's.

One frozen dataclass each, and no torch: :class:`WorldSpec` holds a :class:`PolicySpec` and
:class:`RMTrainSpec` values, so each number has one default, and the build uses them as they are.

>>> spec = WorldSpec().scaled(0.05)
>>> spec.policy.steps, spec.policy.warmup, [v.steps for v in spec.verifiers], spec.rm.steps
(120, 12, [60, 20, 20], 8)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from laser_app.world.tasks import TASKS

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedTokenizerBase


def check_scale(scale: float) -> None:
    """Raise ``ValueError`` unless ``scale`` (a build's shrink factor) is in (0, 1]."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")


def scale_count(n: int, scale: float, low: int) -> int:
    """``n`` (a size or step count) shrunk by ``scale``, at least ``low``.

    >>> scale_count(2400, 0.05, 4), scale_count(20, 0.05, 4)
    (120, 4)
    """
    return max(low, round(n * scale))


@dataclass(frozen=True)
class PolicySpec:
    """Architecture and SFT budget of the built-in policy (:mod:`laser_app.world.policy_model` says how
    they were chosen)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 128
    steps: int = 2400
    batch_size: int = 32
    lr: float = 1.5e-3
    warmup: int = 30
    weight_decay: float = 0.01

    def llama_config(self, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
        """The ``LlamaConfig`` this spec describes, for ``tokenizer``'s vocabulary and special tokens."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=self.hidden, intermediate_size=self.intermediate,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.heads,
            max_position_embeddings=256, tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class RMTrainSpec:
    """Budget and batch mixture of one stage of an RM's Bradley-Terry training (the defaults are the
    built-in RMs' second stage, which teaches the out-of-domain behaviour)."""

    steps: int = 160
    batch_pairs: int = 16
    lr: float = 1e-3
    warmup: int = 10
    ood_share: float = 0.5
    aux_weight: float = 1.0

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


_Stage = TypeVar("_Stage", PolicySpec, RMTrainSpec)


def _verifier(steps: int) -> RMTrainSpec:
    """The first stage of a built-in RM: its own domain only, at a higher learning rate."""
    return RMTrainSpec(steps=steps, lr=2e-3, warmup=20, ood_share=0.0)


@dataclass(frozen=True)
class WorldSpec:
    """Every size and budget of the build. ``WorldSpec().scaled(0.05)`` is a quick world for tests.

    Sizes are per task. The SFT mix weights math : yesno : mcq as 1 : 2 : 3 (math is learned fastest),
    so that at ``policy_step`` every task is middling on dev while the end of the run is strong on all.
    ``verifiers`` (one per task, in the order of ``TASKS``) is each RM's first stage, ``rm`` the second stage
    of every RM. Verifier steps: with 400, the math verifier ranked the policy's own samples little better
    than chance (best of 6 right on 56% of dev prompts, samples 41%); with 1200, 81%. ``distractor_share``
    is the share of RM training candidates whose wrong answer is a near-miss distractor rather than one of
    the policy's own wrong samples. ``generalist`` trains the verifier of every domain that the ``"weak"`` RMs
    start from (from the math verifier: 1200 steps left yes/no at 0.68 on seed 0, 2000 reached 0.92-0.99 on
    every domain on seeds 0 and 1); ``weak_rm`` is their second stage (see
    :mod:`laser_app.world.specialists`): 640 steps changed little, while twice the learning rate with three
    quarters out-of-domain pairs brought seed 1 down to 0.67-0.78 out of domain but cost seed 0's yes/no RM
    0.96 -> 0.86 in its own domain.
    """

    n_sft: tuple[int, int, int] = (2000, 4000, 6000)
    n_rm: int = 800
    n_train: int = 1000
    n_dev: int = 200
    n_test: int = 300
    policy: PolicySpec = PolicySpec()
    policy_step: int = 1000
    verifiers: tuple[RMTrainSpec, ...] = (_verifier(1200), _verifier(400), _verifier(400))
    rm: RMTrainSpec = RMTrainSpec()
    distractor_share: float = 0.3
    generalist: RMTrainSpec = RMTrainSpec(steps=2000, lr=2e-3, warmup=20, ood_share=0.0)
    weak_rm: RMTrainSpec = RMTrainSpec(steps=320)
    rm_samples: int = 4
    eval_samples: int = 8
    temperature: float = 0.8
    max_new_tokens: int = 10
    curve_steps: tuple[int, ...] = (800, 1000, 1200)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in (("n_sft", self.n_sft), ("verifiers", self.verifiers)):
            if len(value) != len(TASKS):
                raise ValueError(f"{name} needs one entry per task {list(TASKS)}, got {len(value)}")
        if not 1 <= self.policy_step <= self.policy.steps:
            raise ValueError(f"policy_step must be in [1, policy.steps={self.policy.steps}], "
                             f"got {self.policy_step}")

    def scaled(self, scale: float) -> WorldSpec:
        """A copy with data sizes and step counts multiplied by ``scale`` (at least a few of each); warm-ups
        are capped at a tenth of the scaled steps."""
        check_scale(scale)
        if scale == 1:
            return self

        def s(n: int, low: int) -> int:
            return scale_count(n, scale, low)

        def shrink(spec: _Stage, low: int) -> _Stage:
            steps = s(spec.steps, low)
            return replace(spec, steps=steps, warmup=min(spec.warmup, max(1, steps // 10)))

        policy = shrink(self.policy, 4)
        n_sft = (s(self.n_sft[0], 16), s(self.n_sft[1], 16), s(self.n_sft[2], 16))
        return replace(self, n_sft=n_sft, n_rm=s(self.n_rm, 8), n_train=s(self.n_train, 4),
                       n_dev=s(self.n_dev, 8), n_test=s(self.n_test, 8), policy=policy,
                       policy_step=max(1, min(policy.steps, round(self.policy_step * scale))),
                       verifiers=tuple(shrink(v, 2) for v in self.verifiers), rm=shrink(self.rm, 2),
                       generalist=shrink(self.generalist, 2), weak_rm=shrink(self.weak_rm, 2),
                       curve_steps=(), extra={**self.extra, "scale": scale})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
