"""--dtype, --gradient-checkpointing and --grad-accum: the policy loads as asked, and bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from laser_app import policy
from laser_app.commands import app
from laser_app.config import RunConfig, format_validation_error
from laser_app.errors import LaserError
from laser_app.policy import check_precision, enable_gradient_checkpointing, load_policy
from tests.laser_app.tiny_setup import build_tiny_setup, run_args

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_setup(tmp_path_factory.mktemp("tiny"))


def _loss_and_grads(model: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = torch.tensor([[1, 5, 6, 7, 8, 2]])
    loss = model(ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return loss.detach(), grads


def test_precisions_map_to_torch_dtypes_and_cpu_limits_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_precision("fp32", "cpu") is torch.float32
    with pytest.raises(LaserError, match=r"^--dtype fp16: training in float16 is not supported on the CPU; use "
                                         r"--dtype bf16 or fp32 there, or fp16 on a GPU$"):
        check_precision("fp16", "cpu")
    monkeypatch.setattr(policy, "bf16_supported", lambda device: False)
    with pytest.raises(LaserError, match=r"^--dtype bf16: this CPU cannot compute in bfloat16; use --dtype fp32$"):
        check_precision("bf16", "cpu")
    monkeypatch.setattr(policy, "bf16_supported", lambda device: True)
    assert check_precision("bf16", "cpu") is torch.bfloat16


def test_bf16_support_is_probed_on_the_device() -> None:
    assert isinstance(policy.bf16_supported("cpu"), bool)


def test_the_policy_loads_in_the_configured_dtype(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "bf16_supported", lambda device: True)
    config = RunConfig(dtype="bf16", lora=True)
    model, _ = load_policy(str(tiny["policy"]), lora=config)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}  # the base weights; peft keeps the adapters in float32 to train them
    model, _ = load_policy(str(tiny["policy"]))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_gradient_checkpointing_gives_the_same_gradients(tiny: dict[str, Path]) -> None:
    plain, _ = load_policy(str(tiny["policy"]), lora=RunConfig(lora=True))
    checkpointed, _ = load_policy(str(tiny["policy"]), lora=RunConfig(lora=True, gradient_checkpointing=True))
    assert checkpointed.base_model.model.model.gradient_checkpointing
    assert not plain.base_model.model.model.gradient_checkpointing
    calls: list[int] = []
    attention = checkpointed.base_model.model.model.layers[0].self_attn
    attention.register_forward_hook(lambda module, args, output: calls.append(1))
    loss, grads = _loss_and_grads(plain)
    loss_ckpt, grads_ckpt = _loss_and_grads(checkpointed)
    assert len(calls) == 2  # the layer ran again in the backward pass: its activations were not kept
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads and sorted(grads_ckpt) == sorted(grads)  # the LoRA weights still get gradients
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad)


def test_a_model_without_checkpointing_is_one_line() -> None:
    with pytest.raises(LaserError, match=r"^--gradient-checkpointing: Linear does not support gradient "
                                         r"checkpointing; drop the flag$"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_grad_accum_is_validated() -> None:
    assert RunConfig().grad_accum == 1 and RunConfig(grad_accum=8).grad_accum == 8
    for values, expected in [({"grad_accum": 0}, "grad_accum (--grad-accum): Input should be greater than or "
                                                 "equal to 1 (got 0)"),
                             ({"grad_accum": 3, "batch_size": 2}, "grad_accum=3 splits a step's pairs into 3 "
                              "parts but a step has at most batch_size * pairs_per_prompt = 2 pairs; lower "
                              "grad_accum to at most 2")]:
        with pytest.raises(ValidationError) as info:
            RunConfig(**values)  # type: ignore[arg-type]
        assert format_validation_error(info.value) == [expected]


def test_cli_flags_and_a_bad_dtype_as_one_line(tiny: dict[str, Path], tmp_path: Path) -> None:
    help_text = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "250"}).output
    for flag in ("--dtype", "--gradient-checkpointing", "--generation", "--grad-accum"):
        assert flag in help_text
    out = tmp_path / "run"
    result = runner.invoke(app, run_args(tiny, out, "--dtype", "fp16"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == ("error: --dtype fp16: training in float16 is not "
                                                      "supported on the CPU; use --dtype bf16 or fp32 there, "
                                                      "or fp16 on a GPU")
    assert not out.exists()
    bad = runner.invoke(app, run_args(tiny, out, "--dtype", "fp8"))
    assert bad.exit_code == 2 and "dtype (--dtype): Input should be 'fp32', 'bf16' or 'fp16'" in bad.output


@pytest.mark.skipif(not policy.bf16_supported("cpu"), reason="this CPU cannot compute in bfloat16")
def test_a_bf16_lora_run_with_gradient_checkpointing(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, run_args(tiny, out, "--dtype", "bf16", "--gradient-checkpointing", "--lora"))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["dtype"], config["gradient_checkpointing"]) == ("bf16", True)
