"""A plain (non-editable) install predicts with its default model, from any folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_built_wheel_carries_the_default_model(tmp_path, shared_images):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
                    str(wheels), str(REPO)], check=True, capture_output=True, timeout=600)
    target = tmp_path / "site"
    # Into a folder of its own, dependencies taken from this environment: the wheel's files are what is tested.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    *map(str, wheels.glob("pneumo-*.whl"))], check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("PNEUMO_MODEL", None)
    env.pop("PNEUMO_MODELS", None)
    where = subprocess.run([sys.executable, "-c", "import pneumo; print(pneumo.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(target))  # not the checkout
    answer = subprocess.run([sys.executable, "-m", "pneumo.cli", "predict", str(shared_images[0].resolve()), "--json"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0, answer.stderr[-2000:]
    result = json.loads(answer.stdout)
    assert result["model"] == "pneumo-ensemble" and result["predictions"][0]["class"]
