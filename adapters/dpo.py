"""The DPO (+ NLL) loss and one optimizer step on a batch of preference pairs, with TRL's conventions.

Conventions follow TRL 1.16's ``DPOTrainer`` (``tests/adapters/test_dpo_trl_equality.py`` checks the numbers
against it on the same batch):

- a pair is tokenized as TRL does for non-conversational data: the tokenizer's eos is appended to both
  responses, ``prompt``, ``prompt + chosen`` and ``prompt + rejected`` are tokenized with special tokens, and
  the response starts where the prompt's tokens stop being a common prefix; sequences longer than
  ``max_length`` keep their start; the batch is right-padded as ``[chosen..., rejected...]``;
- a sequence's log-probability is the sum of its response tokens' log-probabilities;
- the DPO term is ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``; ``label_smoothing`` = eps gives
  the conservative (cDPO) form ``-(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d)`` (TRL 1.16's
  ``sigmoid`` loss has no smoothing, so eps = 0 is what matches it);
- the NLL term is TRL's ``"sft"`` loss: the mean NLL over all chosen-response tokens of the batch, so the
  scalar loss equals ``DPOConfig(loss_type=["sigmoid", "sft"], loss_weights=[1, nll_weight])``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from banditkit.validation import check_positive_int, check_real
from laser_adapters.dpo_collate import TokenizedPairs, collate_sequences, tokenize_pairs

REFERENCE_ADAPTER = "laser_reference"
Reference = Literal["copy", "adapter"]
NLLReduction = Literal["token", "sequence"]


# ------------------------------------------------------------------------------------------------- loss
@dataclass(frozen=True)
class DPOLossOutput:
    """Per-example terms (shape ``(batch,)``) and the scalar ``loss`` to backpropagate.

    ``losses = dpo_weight * dpo_losses + nll_weight * nll_losses``; ``nll_losses`` is each chosen response's
    mean per-token NLL; the rewards are ``beta * (policy - reference)`` log-probabilities, detached. ``nll_loss`` is the
    reduced NLL term, so ``loss == dpo_weight * dpo_losses.mean() + nll_weight * nll_loss``.
    """

    losses: torch.Tensor
    dpo_losses: torch.Tensor
    nll_losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    loss: torch.Tensor
    nll_loss: torch.Tensor


class DPOLoss(torch.nn.Module):  # type: ignore[misc]
    """Sigmoid DPO loss with optional conservative label smoothing and an NLL term on the chosen responses.

    ``nll_reduction="token"`` (TRL's ``"sft"``) averages the NLL over all chosen tokens of the batch when
    ``chosen_tokens`` is given, so longer responses weigh more; ``"sequence"`` (or no ``chosen_tokens``)
    weighs every pair equally, and then ``loss == losses.mean()``.

    >>> loss = DPOLoss(beta=0.5, nll_weight=1.0)
    >>> out = loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]),
    ...            chosen_nll=torch.tensor([0.25]))
    >>> round(out.dpo_losses.item(), 4), round(out.loss.item(), 4)  # -log sigmoid(0.5 * 2) = 0.3133
    (0.3133, 0.5633)
    >>> out.chosen_rewards.item(), out.rejected_rewards.item()
    (0.5, -0.5)
    """

    def __init__(self, beta: float = 0.1, nll_weight: float = 0.0, label_smoothing: float = 0.0,
                 nll_reduction: NLLReduction = "token", dpo_weight: float = 1.0) -> None:
        super().__init__()
        self.beta = check_real("beta", beta, low=0.0, low_open=True)
        self.nll_weight = check_real("nll_weight", nll_weight, low=0.0)
        self.dpo_weight = check_real("dpo_weight", dpo_weight, low=0.0)
        if self.dpo_weight == 0 and self.nll_weight == 0:
            raise ValueError("dpo_weight and nll_weight are both 0: nothing to train; raise one of them")
        self.label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=0.5,
                                          high_open=True)
        if nll_reduction not in ("token", "sequence"):
            raise ValueError(f"nll_reduction must be 'token' or 'sequence', got {nll_reduction!r}")
        self.nll_reduction: NLLReduction = nll_reduction

    def extra_repr(self) -> str:
        return (f"beta={self.beta}, nll_weight={self.nll_weight}, label_smoothing={self.label_smoothing}, "
                f"nll_reduction={self.nll_reduction!r}, dpo_weight={self.dpo_weight}")

    def forward(self, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                chosen_nll: torch.Tensor | None = None, *,
                chosen_tokens: torch.Tensor | None = None) -> DPOLossOutput:
        shape = policy_chosen_logps.shape
        named = {"policy_rejected_logps": policy_rejected_logps, "ref_chosen_logps": ref_chosen_logps,
                 "ref_rejected_logps": ref_rejected_logps, "chosen_nll": chosen_nll,
                 "chosen_tokens": chosen_tokens}
        if len(shape) != 1:
            raise ValueError(f"log-probs must be 1-D (one value per pair), got shape {tuple(shape)}")
        for name, value in named.items():
            if value is not None and value.shape != shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        if chosen_nll is None and self.nll_weight > 0:
            raise ValueError(f"nll_weight={self.nll_weight} needs chosen_nll (mean per-token NLL of each "
                             "chosen response); pass it or set nll_weight=0")

        chosen_logratios = policy_chosen_logps - ref_chosen_logps
        rejected_logratios = policy_rejected_logps - ref_rejected_logps
        logits = self.beta * (chosen_logratios - rejected_logratios)
        eps = self.label_smoothing
        dpo_losses = -(1.0 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)

        nll = torch.zeros_like(dpo_losses) if chosen_nll is None else chosen_nll
        # dpo_weight 0 trains on the chosen responses alone (rejection-sampling fine-tuning)
        losses = self.dpo_weight * dpo_losses + self.nll_weight * nll
        if self.nll_reduction == "token" and chosen_tokens is not None:
            tokens = chosen_tokens.to(nll.dtype)
            nll_term = (nll * tokens).sum() / tokens.sum().clamp(min=1.0)
        else:
            nll_term = nll.mean()
        loss = self.dpo_weight * dpo_losses.mean() + self.nll_weight * nll_term
        return DPOLossOutput(losses=losses, dpo_losses=dpo_losses, nll_losses=nll,
                             chosen_rewards=self.beta * chosen_logratios.detach(),
                             rejected_rewards=self.beta * rejected_logratios.detach(), loss=loss,
                             nll_loss=nll_term)


def sequence_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of response-token log-probs and mean per-token NLL of each sequence: ``(sum_logps, mean_nll)``.

    Token ``t`` is scored by the logits at ``t - 1``; ``response_mask`` marks the response tokens (a sequence
    with none gets ``sum_logps = 0`` and ``mean_nll = 0``). Logits are upcast to float32.

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> with tempfile.TemporaryDirectory() as d:
    ...     model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm(d, hidden=16))
    >>> ids = torch.tensor([[1, 10, 11, 12, 2]])
    >>> logps, nll = sequence_logps(model, ids, torch.ones_like(ids), torch.tensor([[0, 0, 1, 1, 1]]))
    >>> bool(torch.isclose(-logps / 3, nll).item()), logps.shape
    (True, torch.Size([1]))
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    labels = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(logits.dtype)
    token_logps = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    sum_logps = (token_logps * mask).sum(dim=-1)
    mean_nll = -sum_logps / mask.sum(dim=-1).clamp(min=1.0)
    return sum_logps, mean_nll


def response_nll(model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *,
                 max_length: int | None = None, batch_size: int = 32, append_eos: bool = True) -> NDArray[np.float64]:
    """Mean per-token NLL of each response after its prompt under ``model``, tokenized as a DPO step
    tokenizes a chosen response (eos appended unless ``append_eos=False``); eval mode, no gradient, training
    mode restored.

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = tiny_causal_lm(d, hidden=16)
    ...     model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    >>> nll = response_nll(model, tok, ["2+2=", "2+2="], ["4", "five"])
    >>> nll.shape, bool((nll > 0).all())
    ((2,), True)
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    check_positive_int("batch_size", batch_size)
    out = np.zeros(len(prompts), dtype=np.float64)
    if not len(prompts):
        return out
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                pairs = [{"prompt": p, "chosen": r, "rejected": r}
                         for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size],
                                         strict=True)]
                tok = tokenize_pairs(tokenizer, pairs, max_length=max_length, append_eos=append_eos)
                batch = collate_sequences(tok.prompts, tok.chosen, pad_token_id=0 if pad is None else int(pad))
                _, nll = sequence_logps(model, **{k: v.to(device) for k, v in batch.items()})
                out[start:start + len(pairs)] = nll.float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------------- step
@dataclass(frozen=True)
class StepResult:
    """Numbers from one DPO step (or evaluation) on a batch of pairs; arrays have one entry per pair.

    ``loss`` is the scalar that was (or would be) backpropagated, ``dpo_loss + nll_weight * nll_loss``; it
    equals ``losses.mean()`` unless the NLL is token-averaged over chosen responses of different lengths.
    """

    loss: float
    losses: NDArray[np.float64]
    dpo_losses: NDArray[np.float64]
    nll_losses: NDArray[np.float64]
    chosen_rewards: NDArray[np.float64]
    rejected_rewards: NDArray[np.float64]
    dpo_loss: float
    nll_loss: float

    @property
    def n_pairs(self) -> int:
        return int(self.losses.shape[0])

    @property
    def reward_accuracy(self) -> float:
        """Share of pairs whose chosen response has the larger implicit reward."""
        return float(np.mean(self.chosen_rewards > self.rejected_rewards))


@dataclass(frozen=True)
class Share:
    """One process's part of a step's pairs under data parallelism: ``rows`` index the step's pairs, the first
    ``n_real`` its own and the rest padding (weight 0: every process must take part in each gradient
    exchange, even with fewer pairs than processes); ``world`` processes average their gradients."""

    rows: tuple[int, ...]
    n_real: int
    world: int = 1


def _numpy(t: torch.Tensor) -> NDArray[np.float64]:
    return np.asarray(t.detach().to(torch.float64).cpu().numpy(), dtype=np.float64)


def _is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is part of the llm extra
        return False
    return isinstance(model, PeftModel)


def _disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


class DPOStep:
    """One optimizer step of DPO (+ NLL) on a batch of preference pairs, for a policy that persists.

    The reference is the policy at construction or at the last :meth:`sync_reference` (iterative DPO):
    ``reference="copy"`` keeps a frozen copy: a deep copy of ``model``, or ``ref_model`` if given (used as
    it is until :meth:`sync_reference` loads the policy's weights into it);
    ``reference="adapter"`` (a peft model) holds no second model: the reference pass disables the adapter
    (the base model) until the first :meth:`sync_reference`, which snapshots the trained adapter into a frozen
    adapter named ``laser_reference``. Reference log-probs are computed once per sequence and cached until
    :meth:`sync_reference`. Dropout is disabled in the policy (as TRL's ``disable_dropout=True``).
    ``append_eos=False`` trains chat-templated replies as the template ends them (no extra eos).
    ``grad_accum`` splits a step's pairs into that many micro-batches whose gradients add up before the one
    optimizer step: the same update (within float rounding) for less activation memory.

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = tiny_causal_lm(d, hidden=16)
    ...     model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> dpo = DPOStep(model, tok, optimizer, DPOLoss(beta=0.1, nll_weight=1.0))
    >>> pairs = [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}]
    >>> before = dpo.evaluate(pairs).loss
    >>> after = [dpo.step(pairs).loss for _ in range(3)][-1]
    >>> dpo.evaluate(pairs).loss < before, dpo.reference_forwards
    (True, 1)
    """

    def __init__(self, model: Any, tokenizer: Any, optimizer: torch.optim.Optimizer | None,
                 loss: DPOLoss | None = None, *, reference: Reference = "copy",
                 max_length: int | None = 256, ref_model: Any = None, max_grad_norm: float | None = None,
                 disable_dropout: bool = True, append_eos: bool = True, grad_accum: int = 1) -> None:
        if model is None:
            raise ValueError("DPOStep needs the policy model, got None")
        if tokenizer is None:
            raise ValueError("DPOStep needs the policy's tokenizer, got None")
        if reference not in ("copy", "adapter"):
            raise ValueError(f"reference must be 'copy' or 'adapter', got {reference!r}")
        if loss is not None and not isinstance(loss, DPOLoss):
            raise TypeError(f"loss must be a DPOLoss, got {type(loss).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.optimizer = optimizer
        self.loss = loss if loss is not None else DPOLoss()
        self.reference: Reference = reference
        self.max_length = None if max_length is None else check_positive_int("max_length", max_length)
        self.append_eos = bool(append_eos)
        self.grad_accum = check_positive_int("grad_accum", grad_accum)
        self.train_model = model  # what the training forward runs: the data-parallel wrapper once prepared
        self.accelerator: Any = None
        self.max_grad_norm = None if max_grad_norm is None else check_real("max_grad_norm", max_grad_norm,
                                                                            low=0.0, low_open=True)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = 0 if pad is None else int(pad)
        self.steps = 0
        self.reference_forwards = 0
        self._cache: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}
        self._ref_model: Any = None
        self._ref_adapter = False
        if disable_dropout:
            _disable_dropout(model)
        if reference == "adapter":
            if ref_model is not None:
                raise ValueError("reference='adapter' uses the policy with its adapter disabled; do not pass "
                                 "ref_model (or use reference='copy')")
            if not _is_peft_model(model):
                raise ValueError(f"reference='adapter' needs a peft model (got {type(model).__name__}): "
                                 "wrap it with peft.get_peft_model(model, LoraConfig(...)) or use "
                                 "reference='copy'")
        else:
            if ref_model is model:
                raise ValueError("ref_model must be a separate model, not the policy itself; "
                                 "omit it to get a copy")
            self._ref_model = copy.deepcopy(model) if ref_model is None else ref_model
            self._freeze(self._ref_model)

    @staticmethod
    def _freeze(module: Any) -> None:
        module.eval()
        module.requires_grad_(False)
        _disable_dropout(module)

    @property
    def reference_model(self) -> Any:
        """The frozen reference copy (None under ``reference="adapter"``)."""
        return self._ref_model

    @property
    def cache_size(self) -> int:
        """Number of sequences whose reference log-prob is cached."""
        return len(self._cache)

    def sync_reference(self) -> None:
        """Make the current policy the reference (at the start of each DPO iteration); clears the cache."""
        if self.reference == "copy":
            self._ref_model.load_state_dict(self.model.state_dict())
            self._freeze(self._ref_model)
        else:
            active = self.model.active_adapter
            if REFERENCE_ADAPTER not in self.model.peft_config:
                self.model.add_adapter(REFERENCE_ADAPTER, self.model.peft_config[active])
            src, dst = f".{active}.", f".{REFERENCE_ADAPTER}."
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    if src in name:
                        ref_param = self.model.get_parameter(name.replace(src, dst))
                        ref_param.copy_(param)
                        ref_param.requires_grad_(False)
            self._ref_adapter = True
        self._cache.clear()

    def clear_cache(self) -> None:
        """Forget cached reference log-probs (without moving the reference)."""
        self._cache.clear()

    def state_dict(self) -> dict[str, Any]:
        """What continuing later needs besides the policy and the optimizer: the counters, whether the
        reference has moved (``reference="adapter"``), ``reference_weights`` (the frozen copy's parameters,
        or the reference adapter's once it exists; none while the adapter-disabled model is the reference)
        and the cached reference log-probs as ``[prompt ids, response ids, log-prob]`` rows, so a restored
        step reuses the very numbers it computed.

        >>> import tempfile
        >>> from transformers import AutoModelForCausalLM, AutoTokenizer
        >>> from laser_adapters.testing import tiny_causal_lm
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = tiny_causal_lm(d, hidden=16)
        ...     model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        >>> dpo = DPOStep(model, tok, torch.optim.SGD(model.parameters(), lr=0.1))
        >>> _ = dpo.step([{"prompt": "2+2=", "chosen": "4", "rejected": "5"}])
        >>> state = dpo.state_dict()
        >>> state["steps"], len(state["cache"]), sorted(state["reference_weights"])[0]
        (1, 2, 'lm_head.weight')
        """
        if self._ref_model is not None:
            weights = dict(self._ref_model.named_parameters())
        else:
            weights = {n: p for n, p in self.model.named_parameters() if f".{REFERENCE_ADAPTER}." in n}
        return {"steps": self.steps, "reference_forwards": self.reference_forwards,
                "ref_adapter": self._ref_adapter,
                "reference_weights": {n: p.detach().cpu().clone() for n, p in weights.items()},
                "cache": [[list(p), list(r), v] for (p, r), v in self._cache.items()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, into a step built the same way (same reference kind)."""
        if bool(state["ref_adapter"]) and self.reference == "adapter" and not self._ref_adapter:
            active = self.model.active_adapter
            if REFERENCE_ADAPTER not in self.model.peft_config:
                self.model.add_adapter(REFERENCE_ADAPTER, self.model.peft_config[active])
            self._ref_adapter = True
        owner = self._ref_model if self._ref_model is not None else self.model
        weights = dict(state["reference_weights"])
        expected = (set(dict(owner.named_parameters())) if self._ref_model is not None else
                    {n for n, _ in owner.named_parameters() if f".{REFERENCE_ADAPTER}." in n})
        if set(weights) != expected:
            raise ValueError(f"the saved reference has {len(weights)} tensors that do not match this "
                             f"model's {len(expected)} reference parameters")
        with torch.no_grad():
            for name, value in weights.items():
                param = owner.get_parameter(name)
                param.copy_(value.to(device=param.device, dtype=param.dtype))
                param.requires_grad_(False)
        self.steps = int(state["steps"])
        self.reference_forwards = int(state["reference_forwards"])
        self._cache = {(tuple(int(t) for t in p), tuple(int(t) for t in r)): float(v)
                       for p, r, v in state["cache"]}

    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        if self._ref_model is not None:
            yield self._ref_model
            return
        model = self.model
        was_training = model.training
        model.eval()
        try:
            if self._ref_adapter:
                previous = model.active_adapter
                model.set_adapter(REFERENCE_ADAPTER)
                try:
                    yield model
                finally:
                    model.set_adapter(previous)
            else:
                with model.disable_adapter():
                    yield model
        finally:
            model.train(was_training)

    def _reference_logps(self, prompts: list[list[int]],
                         responses: list[list[int]]) -> torch.Tensor:
        keys = [(tuple(p), tuple(r)) for p, r in zip(prompts, responses, strict=True)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            batch = collate_sequences([k[0] for k in missing], [k[1] for k in missing],
                                      pad_token_id=self.pad_token_id)
            with torch.no_grad(), self._reference() as ref:
                device = next(ref.parameters()).device
                logps, _ = sequence_logps(ref, *(batch[k].to(device) for k in
                                                 ("input_ids", "attention_mask", "response_mask")))
            self.reference_forwards += 1
            self._cache.update(zip(missing, logps.tolist(), strict=True))
        return torch.tensor([self._cache[k] for k in keys], dtype=torch.float32)

    def prepare(self, accelerator: Any) -> None:
        """Train data-parallel through accelerate: the policy as ``accelerator`` wraps it (gradients averaged
        over processes) runs the training passes, its optimizer the steps; reference passes and evaluation
        keep the bare policy. Pass each :meth:`step` this process's :class:`Share` of the pairs."""
        if self.optimizer is None:
            raise ValueError("DPOStep was built without an optimizer: nothing to train data-parallel")
        self.train_model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        self.accelerator = accelerator

    def release(self) -> None:
        """Stop training data-parallel: drop accelerate's wrapper of the policy (and the accelerator's own
        references to it), whose teardown needs the process group, so call this before the group ends."""
        if self.accelerator is None:
            return
        accelerator, self.accelerator = self.accelerator, None
        self.train_model, self.optimizer = self.model, getattr(self.optimizer, "optimizer", self.optimizer)
        accelerator.free_memory()  # its lists of prepared objects, then a garbage collection

    def compute_loss(self, pairs: Sequence[Mapping[str, Any]]) -> DPOLossOutput:
        """The loss on ``pairs`` at the current policy, with the graph attached (no optimizer step)."""
        tok = tokenize_pairs(self.tokenizer, pairs, max_length=self.max_length, append_eos=self.append_eos)
        return self._loss_on(tok, range(len(tok.prompts)), self.model)

    def _loss_on(self, tok: TokenizedPairs, rows: Sequence[int], model: Any) -> DPOLossOutput:
        n = len(rows)
        prompts = [tok.prompts[i] for i in rows] * 2
        responses = [tok.chosen[i] for i in rows] + [tok.rejected[i] for i in rows]
        ref = self._reference_logps(prompts, responses)
        batch = collate_sequences(prompts, responses, pad_token_id=self.pad_token_id)
        device = next(self.model.parameters()).device
        logps, nll = sequence_logps(model, *(batch[k].to(device) for k in
                                             ("input_ids", "attention_mask", "response_mask")))
        ref = ref.to(device=device, dtype=logps.dtype)
        chosen_tokens = batch["response_mask"][:n, 1:].sum(dim=-1).to(device)
        out: DPOLossOutput = self.loss(logps[:n], logps[n:], ref[:n], ref[n:], nll[:n],
                                       chosen_tokens=chosen_tokens)
        return out

    def _result(self, out: DPOLossOutput, rows: int | None = None) -> StepResult:
        def first(t: torch.Tensor) -> NDArray[np.float64]:  # the real rows (padding comes last)
            return _numpy(t[:rows])

        return StepResult(loss=float(out.loss.detach()), losses=first(out.losses),
                          dpo_losses=first(out.dpo_losses), nll_losses=first(out.nll_losses),
                          chosen_rewards=first(out.chosen_rewards),
                          rejected_rewards=first(out.rejected_rewards),
                          dpo_loss=float(out.dpo_losses.detach().mean()),
                          nll_loss=float(out.nll_loss.detach()))

    def _parts(self, pairs: Sequence[Mapping[str, Any]], share: Share | None, *, train: bool) -> StepResult:
        """The numbers on ``share`` of ``pairs`` (default: all), in ``grad_accum`` micro-batches whose losses are
        backpropagated when ``train``. A part's loss is its pairs' terms summed over the whole step's pair and
        token counts, times ``share.world``: the parts add up to this process's share of the step's loss, and
        the mean over processes (of the gradients, and of the scalars here) is the whole step's."""
        tok = tokenize_pairs(self.tokenizer, pairs, max_length=self.max_length, append_eos=self.append_eos)
        share = share or Share(tuple(range(len(tok.prompts))), len(tok.prompts))
        by_token = self.loss.nll_reduction == "token"  # an NLL weight per pair: its chosen tokens, as trained
        weights = [max(len(c) - (not p), 0) if by_token else 1 for p, c in zip(tok.prompts, tok.chosen, strict=True)]
        n_pairs, n_weight = len(weights), max(sum(weights), 1)
        parts = min(self.grad_accum, len(share.rows)) if train else 1
        outs, terms = [], torch.zeros(2, dtype=torch.float64)
        for j, chunk in enumerate(np.array_split(np.arange(len(share.rows)), parts)):
            rows, real = [share.rows[i] for i in chunk], int((chunk < share.n_real).sum())
            skip_sync = train and j < parts - 1 and self.accelerator is not None  # gradients exchanged once
            with self.accelerator.no_sync(self.train_model) if skip_sync else contextlib.nullcontext():
                out = self._loss_on(tok, rows, self.train_model if train else self.model)
                mask = (torch.arange(len(rows)) < real).to(out.losses)
                nll_mask = mask * torch.tensor([weights[r] for r in rows]).to(mask)
                dpo = share.world * (out.dpo_losses * mask).sum() / n_pairs
                nll = share.world * (out.nll_losses * nll_mask).sum() / n_weight
                if train:
                    self._backward(self.loss.dpo_weight * dpo + self.loss.nll_weight * nll)
            terms += torch.stack([dpo.detach(), nll.detach()]).to(device="cpu", dtype=torch.float64)
            outs.append(self._result(out, rows=real))
        dpo_term, nll_term = terms.tolist()
        joined = {name: np.concatenate([getattr(o, name) for o in outs]) for name in
                  ("losses", "dpo_losses", "nll_losses", "chosen_rewards", "rejected_rewards")}
        return StepResult(loss=self.loss.dpo_weight * dpo_term + self.loss.nll_weight * nll_term, **joined,
                          dpo_loss=dpo_term, nll_loss=nll_term)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def step(self, pairs: Sequence[Mapping[str, Any]], *, share: Share | None = None) -> StepResult:
        """Compute the loss on ``pairs`` (data-parallel: on this process's ``share``), backpropagate and take
        one optimizer step; numbers are pre-step (on the share: see :meth:`_parts`)."""
        if self.optimizer is None:
            raise ValueError("DPOStep was built without an optimizer: pass one to train, or use evaluate()")
        self.optimizer.zero_grad(set_to_none=True)
        if share is None and self.grad_accum == 1 and self.accelerator is None:
            out = self.compute_loss(pairs)
            out.loss.backward()
            result = self._result(out)
        else:
            result = self._parts(pairs, share, train=True)
        if self.max_grad_norm is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]
                      if p.grad is not None]
            clip = torch.nn.utils.clip_grad_norm_ if self.accelerator is None else self.accelerator.clip_grad_norm_
            clip(params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return result

    def evaluate(self, pairs: Sequence[Mapping[str, Any]], *, share: Share | None = None) -> StepResult:
        """The numbers :meth:`step` would give, without a gradient step (eval mode, no grad)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                result = self._result(self.compute_loss(pairs)) if share is None else \
                    self._parts(pairs, share, train=False)
        finally:
            self.model.train(was_training)
        return result
