"""How closely int8 quantization settings follow the fp32 ONNX model, measured without tuning on dev.

For each setting, the exported ``model.onnx`` of ``--model-dir`` is quantized (``sst2.export.quantize_int8``)
into a temporary copy of the model directory, and the int8 model's predictions are compared with the
fp32 ONNX model's on the training sentences (no labels needed, so a setting can be chosen there) and on
dev: labels that differ, mean |difference of the positive probability|, and dev accuracy. Needs
``sst2 export --model-dir DIR`` first.

    python scripts/int8_agreement.py --model-dir runs/efficient/model --out runs/int8_agreement.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from sst2.data.dataset import load_splits
from sst2.data.splits import resolve_data_dir
from sst2.inference.export import quantize_int8
from sst2.inference.classifier import SentimentClassifier
from sst2.inference.runtimes import ONNX_FILES

SETTINGS: dict[str, dict] = {
    "default": {},  # what `sst2 export --int8` writes
    "reduce-range": {"reduce_range": True},
    "head-fp32": {"keep_fp32": (r"^/head/",)},
    "ffn-output-fp32": {"keep_fp32": (r"/layer\.\d+/output/dense/",)},  # the 6 feed-forward output matrices
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", default="runs/efficient/model")
    ap.add_argument("--data", default=None, help="data folder (default: as sst2 train)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    src = Path(args.model_dir)
    if not (src / ONNX_FILES["onnx"]).is_file():
        raise SystemExit(f"{src}: no {ONNX_FILES['onnx']}; run: sst2 export --model-dir {src}")
    splits = load_splits(resolve_data_dir(args.data))
    labels = np.array(splits["dev"].labels) == 1

    def probs(model_dir: Path, runtime: str, texts: list[str]) -> np.ndarray:
        clf = SentimentClassifier.from_pretrained(model_dir, runtime=runtime, threads=args.threads)
        return np.array([p.positive_prob for p in clf.predict_details(texts)])

    ref = {k: probs(src, "onnx", splits[k].texts) for k in ("train", "dev")}
    rows = [{"setting": "fp32", "dev_accuracy": round(float(((ref["dev"] > 0.5) == labels).mean()), 4)}]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "model"
        shutil.copytree(src, work, ignore=shutil.ignore_patterns(ONNX_FILES["onnx-int8"]))
        for name in args.settings:
            quantize_int8(work / ONNX_FILES["onnx"], work / ONNX_FILES["onnx-int8"], **SETTINGS[name])
            row = {"setting": name}
            for split in ("train", "dev"):
                q = probs(work, "onnx-int8", splits[split].texts)
                row[f"{split}_labels_changed"] = int(((q > 0.5) != (ref[split] > 0.5)).sum())
                row[f"{split}_mean_abs_prob_diff"] = round(float(np.abs(q - ref[split]).mean()), 4)
            row["dev_accuracy"] = round(float(((q > 0.5) == labels).mean()), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"model_dir": str(src), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
