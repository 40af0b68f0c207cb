"""Text normalization: treebank tokenization undone, the same in training and at inference."""

import pytest

from sst2.text import normalize_ptb, normalize_texts


@pytest.mark.parametrize("raw, plain", [
    ("it 's a sharp movie about otherwise dull subjects .", "it's a sharp movie about otherwise dull subjects."),
    ("you need n't be steeped in '50s sociology , pop culture", "you needn't be steeped in '50s sociology, pop culture"),
    ("gets -lrb- sci-fi -rrb- rehash .", "gets (sci-fi) rehash."),
    ("this is no `` waterboy ! ''", 'this is no "waterboy!"'),
    ("8 1\\/2 stars , \\*\\*\\* at most", "8 1/2 stars, *** at most"),
    ("i wan na see it , we 're gon na", "i wanna see it, we're gonna"),
    ("ca n't , does n't , i 'm , they 'll , we 've , she 'd", "can't, doesn't, i'm, they'll, we've, she'd"),
    ("costs $ 5 -- 10 % more", "costs $5 -- 10% more"),
])
def test_ptb_tokenization_is_undone(raw, plain):
    assert normalize_ptb(raw) == plain


@pytest.mark.parametrize("text", ["A gorgeous, witty movie.", "It doesn't work (at all)!", "5% off: $10", "  padded  "])
def test_ordinary_text_is_left_alone_and_normalization_is_idempotent(text):
    assert normalize_ptb(text) == text.strip()
    assert normalize_ptb(normalize_ptb("it 's -lrb- not -rrb- bad .")) == normalize_ptb("it 's -lrb- not -rrb- bad .")


def test_none_keeps_texts_and_unknown_names_fail():
    texts = ["it 's -lrb- x -rrb-"]
    assert normalize_texts(texts, "none") == texts
    with pytest.raises(ValueError, match="unknown text normalization 'nfc': choose one of none, ptb"):
        normalize_texts(texts, "nfc")
