"""``import banditkit`` (and every module in it) must not pull in torch or the LLM stack."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import importlib, json, pkgutil, sys
import banditkit
names = [m.name for m in pkgutil.walk_packages(banditkit.__path__, "banditkit.")]
for name in names:
    importlib.import_module(name)
heavy = ("torch", "transformers", "trl", "sentence_transformers", "laser_adapters", "laser_app", "pandas")
print(json.dumps({"modules": names, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def test_import_banditkit_leaves_torch_out() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert "banditkit.simulate" in report["modules"] and "banditkit.envs.supervised" in report["modules"]
    assert report["heavy"] == [], f"importing banditkit pulled in {report['heavy']}"
