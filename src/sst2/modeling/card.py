"""The model card: ``README.md`` in a model directory, in the layout the Hugging Face hub shows
(YAML front matter, then Markdown), written from what training recorded."""

from __future__ import annotations

import json

DESCRIPTIONS = {
    "efficient": "a frozen pretrained encoder whose hidden states feed a small trained LSTM head",
    "vanilla": "the pretrained encoder fully fine-tuned, with a linear classifier on mean-pooled states",
    "partial": "the pretrained encoder with only its top layers fine-tuned, and a linear classifier",
    "lora": "the pretrained encoder with LoRA adapters (merged into its weights) and a linear classifier",
}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def render(spec: dict, info: dict | None = None) -> str:
    """The card of a model with ``spec`` (``sst2_model.json``) and training ``info`` (metrics, data files,
    command; absent for a model saved without them)."""
    info = info or {}
    m = info.get("metrics", {})
    labels = spec.get("labels", [])
    recipe = spec.get("model", "?")
    lines = ["---", "library_name: sst2", "pipeline_tag: text-classification", "language: en", "tags:",
             "- sentiment-analysis", f"- sst2-{recipe}", "---", "",
             f"# sst2 sentiment classifier ({recipe}{', preset ' + spec['preset'] if spec.get('preset') else ''})", "",
             f"A {recipe} model: {DESCRIPTIONS.get(recipe, recipe)}. Backbone: `{spec.get('backbone')}`.", "",
             f"Labels, in the order of `predict_proba`'s columns: {', '.join(f'`{x}`' for x in labels)}.", "",
             "## Use", "", "```python", "from sst2 import SentimentClassifier", "",
             'clf = SentimentClassifier.from_pretrained("path/to/this/folder")  # runtime="onnx-int8" after sst2 export',
             'clf.predict("a gorgeous , witty movie .")', "```", "",
             "From the shell: `sst2 predict --model-dir path/to/this/folder \"a gorgeous , witty movie .\"`.", ""]
    if m:
        lines += ["## Training and results", "",
                  f"Trained with `{info.get('command', '?')}`; dev accuracy picks the kept epoch "
                  f"({_fmt(m.get('best_epoch'))} of {_fmt(m.get('epochs'))}), test accuracy is measured once.", "",
                  "| dev accuracy | test accuracy | trainable params | total params | training time (s) |",
                  "| ---: | ---: | ---: | ---: | ---: |",
                  f"| {_fmt(m.get('dev_accuracy'))} | {_fmt(m.get('test_accuracy'))} | {_fmt(m.get('trainable_params'))} "
                  f"| {_fmt(m.get('total_params'))} | {_fmt(m.get('train_seconds'))} |", ""]
    files = info.get("data_files", {})
    if files:
        lines += ["Training data (sha256 of each file, or of the texts and labels given in memory):", ""]
        lines += [f"- {k}: {v['rows']:,} rows, `{v['path'] or 'in memory'}`, sha256 `{v['sha256']}`"
                  for k, v in files.items()]
        lines.append("")
    lines += ["## Intended use and limits", "",
              f"Sentiment ({', '.join(labels)}) of English sentences and short reviews like the training data; "
              "other domains may score lower.",
              f"Texts are cut at {spec.get('max_length')} tokens (special tokens included): the rest of a longer "
              "text is ignored, and predictions say `truncated`.",
              f"Text normalization before tokenization: `{spec.get('text_normalization', 'none')}` (applied by every "
              "runtime, as in training).",
              f"Probabilities are calibrated by temperature scaling on the dev split (temperature "
              f"{spec.get('temperature', 1.0):.3f}; 1 means none was fitted).", ""]
    if info.get("config"):
        lines += ["## Config", "", "```json", json.dumps(info["config"], indent=2), "```", ""]
    return "\n".join(lines)
