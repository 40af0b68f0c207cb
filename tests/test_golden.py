"""Golden values: three training recipes on the tiny random BERT of conftest.py, seed 0, pinned to the
numbers the code gave when golden.json was written.

Each recipe runs ``sst2 train`` through its CLI entry (``sst2.cli.main``) and compares, against
``tests/golden.json``:

* every per-batch training loss of ``history.csv`` (written with 6 decimals): abs tolerance 2e-6,
  i.e. one unit of the last written digit either way after rounding;
* the saved model's logits on the data folder's ``dev.tsv``: abs tolerance 1e-6 (two runs, in separate
  processes and with 1 or 2 threads, gave bit-identical logits; re-batching the same model moves
  them by at most 6e-8, so 1e-6 leaves room for harmless reordering of float sums and nothing more);
* dev and test accuracy from ``metrics.json``.

Any change to what the code computes (initialisation, batching order, loss, optimiser, schedule,
feature cache, saving) fails here. If the change is intended, regenerate the file and review the diff::

    SST2_WRITE_GOLDEN=1 HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_golden.py

With ``SST2_WRITE_GOLDEN=1`` each test writes its recipe's entry into golden.json instead of
comparing (and is reported as skipped). The values depend on the CPU kernels of the torch build
recorded in the file; another build or CPU may need a regeneration.

Only ``dev_logits`` below touches the package's Python API; everything else goes through the CLI and
the files of the run directory.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sst2.cli import main

GOLDEN = Path(__file__).with_name("golden.json")
LOSS_ATOL = 2e-6
LOGIT_ATOL = 1e-6
ACCURACY_ATOL = 1e-6

COMMON = ["--epochs", "2", "--batch-size", "8", "--max-length", "32", "--seed", "0", "--threads", "1", "--quiet"]
RECIPES = {
    "efficient-improved": ["--model", "efficient", "--preset", "improved", *COMMON],
    "efficient-seed": ["--model", "efficient", "--preset", "seed", *COMMON],
    "vanilla": ["--model", "vanilla", *COMMON],
}


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def dev_logits(model_dir: Path, data_dir: Path) -> list[float]:
    """The saved model's logits on ``dev.tsv``, in file order (the one use of the Python API)."""
    from sst2.model import SentimentModel

    texts = [row["sentence"] for row in read_tsv(data_dir / "dev.tsv")]
    return SentimentModel.load(model_dir).predict_logits(texts).tolist()


def run_recipe(name: str, backbone: Path, data: Path, tmp_path: Path) -> dict:
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--backbone", str(backbone), "--out", str(out),
               "--cache-dir", str(tmp_path / "cache"), *RECIPES[name]])
    assert rc == 0
    with open(out / "history.csv", newline="") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    metrics = json.loads((out / "metrics.json").read_text())
    return {"args": RECIPES[name], "losses": losses,
            "dev_logits": [round(x, 8) for x in dev_logits(out / "model", data)],
            "dev_accuracy": metrics["dev_accuracy"], "test_accuracy": metrics["test_accuracy"]}


def write_golden(name: str, values: dict) -> None:
    import torch

    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    golden["about"] = {"written_by": "SST2_WRITE_GOLDEN=1 pytest tests/test_golden.py",
                       "fixtures": "tiny_backbone_dir, tiny_data_dir (tests/conftest.py)",
                       "torch": torch.__version__}
    golden.setdefault("recipes", {})[name] = values
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")


@pytest.mark.parametrize("name", list(RECIPES))
def test_golden_run(name, tiny_backbone_dir, tiny_data_dir, tmp_path):
    got = run_recipe(name, tiny_backbone_dir, tiny_data_dir, tmp_path)
    if os.environ.get("SST2_WRITE_GOLDEN") == "1":
        write_golden(name, got)
        pytest.skip(f"SST2_WRITE_GOLDEN=1: wrote {name} into {GOLDEN.name}")
    want = json.loads(GOLDEN.read_text())["recipes"][name]
    assert want["args"] == got["args"], "the recipe changed: regenerate golden.json (see the module docstring)"
    assert len(got["losses"]) == len(want["losses"]) == 2 * 6  # 48 training sentences, batch 8, 2 epochs
    np.testing.assert_allclose(got["losses"], want["losses"], rtol=0, atol=LOSS_ATOL, err_msg="history.csv losses")
    assert len(got["dev_logits"]) == len(want["dev_logits"]) == 16
    np.testing.assert_allclose(got["dev_logits"], want["dev_logits"], rtol=0, atol=LOGIT_ATOL, err_msg="dev logits")
    for key in ("dev_accuracy", "test_accuracy"):
        assert got[key] == pytest.approx(want[key], abs=ACCURACY_ATOL), key
