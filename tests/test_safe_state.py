"""Saved state is plain data: no package code unpickles anything or runs a model repository's code unasked."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("banditkit", "adapters", "laser_app")
#: What would load pickled (code-running) data, or run remote code, if it appeared in the packages.
UNSAFE = {
    "import pickle / cloudpickle / dill / joblib": re.compile(
        r"^\s*(import|from)\s+(c?pickle|cloudpickle|dill|joblib)\b", re.M),
    "numpy allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)"),
    "trust_remote_code=True hard-coded": re.compile(r"trust_remote_code\s*=\s*True"),
}


def test_no_package_loads_pickles_or_trusts_remote_code() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            found += [f"{path.relative_to(ROOT)}: {what}" for what, pattern in UNSAFE.items() if pattern.search(text)]
    assert not found, found


def test_the_patterns_catch_what_they_name() -> None:  # the scan above can fail
    samples = {"import pickle / cloudpickle / dill / joblib": "import pickle\n",
               "numpy allow_pickle=True": "np.load(f, allow_pickle=True)",
               "torch.load without weights_only=True": "torch.load(path)",
               "trust_remote_code=True hard-coded": "from_pretrained(m, trust_remote_code=True)"}
    for what, text in samples.items():
        assert UNSAFE[what].search(text), what
    assert not UNSAFE["torch.load without weights_only=True"].search("torch.load(path, weights_only=True)")
