"""Text normalization: one form for the treebank files and for ordinary text, in training and at inference."""

import pytest

from sst2.data.text import normalize_texts, normalize_treebank


@pytest.mark.parametrize("raw, canonical", [
    ("gets -lrb- sci-fi -rrb- rehash .", "gets ( sci-fi ) rehash ."),
    ("this is no `` waterboy ! ''", 'this is no " waterboy ! "'),
    ("8 1\\/2 stars , \\*\\*\\* at most", "8 1/2 stars , *** at most"),
    ("it does n't work and it 's dull", "it does n't work and it 's dull"),  # treebank form kept
    ("It doesn't work, I can't stand it", "It does n't work, I ca n't stand it"),  # ordinary text -> same form
    ("it wasn’t good", "it was n't good"),  # typographic apostrophe
    ("A gorgeous, witty movie.", "A gorgeous, witty movie."),
])
def test_treebank_and_ordinary_text_meet_in_one_form(raw, canonical):
    assert normalize_treebank(raw) == canonical
    assert normalize_treebank(canonical) == canonical  # idempotent


def test_none_keeps_texts_and_unknown_names_fail():
    texts = ["it 's -lrb- x -rrb-"]
    assert normalize_texts(texts, "none") == texts
    with pytest.raises(ValueError, match="unknown text normalization .nfc.: choose one of none, contractions, treebank$"):
        normalize_texts(texts, "nfc")


@pytest.mark.parametrize("raw, canonical", [
    ("It doesn't work, I can’t stand it", "It does n't work, I ca n't stand it"),
    ("it does n't work -lrb- really -rrb- ``", "it does n't work -lrb- really -rrb- ``"),  # treebank text: unchanged
])
def test_contractions_only_splits_negations(raw, canonical):
    assert normalize_texts([raw], "contractions") == [canonical]
    assert normalize_texts([canonical], "contractions") == [canonical]


