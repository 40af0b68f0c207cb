"""scripts/cv.py: the folds it writes cover the training split exactly once, stratified by label."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cv.py"


def _load():
    spec = importlib.util.spec_from_file_location("cv_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel"
    return [tuple(line.split("\t")) for line in lines[1:]]


def test_folds_hold_out_every_sentence_once(tmp_path):
    cv = _load()
    rows = [(f"sentence {i} , with `` quotes '' and \\/ escapes", str(i % 3 == 0)) for i in range(50)]
    rows = [(t, "1" if y == "True" else "0") for t, y in rows]
    src = tmp_path / "train.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    folds = cv.write_folds(src, 5, tmp_path / "folds")
    held = [r for d in folds for r in _rows(d / "dev.tsv")]
    assert sorted(held) == sorted(rows)  # every row held out exactly once, text unchanged
    for d in folds:
        dev, train = _rows(d / "dev.tsv"), _rows(d / "train.tsv")
        assert _rows(d / "test.tsv") == dev
        assert sorted(dev + train) == sorted(rows)
        assert sum(y == "1" for _, y in dev) in (3, 4)  # 17 positives over 5 folds: stratified


def test_variant_settings_resolve_like_sst2_train_set():
    cv = _load()
    cfg = cv.variant_config("optim.mix_lr_scale=1 data.normalize=none", None, **{"run.seed": 3, "run.out": "x"})
    assert (cfg.optim.mix_lr_scale, cfg.data.normalize, cfg.run.seed, cfg.run.out, cfg.model.recipe) == (
        1.0, "none", 3, "x", "efficient")
    assert cfg.optim.epochs == 8  # the rest is the improved preset
