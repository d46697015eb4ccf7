"""CLIP tokenizer: ids must equal transformers' CLIPTokenizer built offline from the same BPE file."""

import gzip
import importlib.resources
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from conceptseg.model.tokenizer import (
    END_OF_TEXT,
    START_OF_TEXT,
    WORD_CACHE_SIZE,
    BpeTokenizer,
    clip_tokenizer,
    tokenize,
)

CONTEXT = 32

# HF and the official cleaning agree on these (HF only does NFC + whitespace + lower-case).
PLAIN_PHRASES = [
    "a yellow school bus",
    "cat",
    "Dog!",
    "a RED Car, parked.",
    "it's a man's hat",
    "they'll've done it",
    "café crème brûlée",
    "naïve façade",
    "ÄÖÜ ß",
    "🐶 dog 🐱",
    "狗和猫",
    "東京タワー",
    "Ελληνικά",
    "русский текст",
    "42 apples and 3.14 pies",
    "$100 #1 @home",
    "e.g. U.S.A.",
    "hello-world_foo/bar",
    "person (left)",
    "  lots   of \t spaces\n here ",
    "x" * 100,
]
# Only ftfy / html.unescape change these, so HF sees the text after our cleaning.
CLEANED_PHRASES = {
    "&amp; &lt;b&gt;": "& <b>",
    "&amp;amp; double": "& double",  # unescaped twice
    "it’s curly": "it's curly",  # ftfy straightens quotes
    "ﬁne ligature": "fine ligature",
    "ｆｕｌｌ width": "full width",
    "mojibake cafÃ©": "mojibake café",
}


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    """transformers' CLIPTokenizer from vocab.json + merges.txt written from the shipped BPE file."""
    bpe = importlib.resources.files("conceptseg") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")[1:48895]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=CONTEXT)


def hf_ids(tokenizer, text):
    return tokenizer(text, padding="max_length", max_length=CONTEXT, truncation=True)["input_ids"]


def assert_matches_hf(ours, reference):
    """Same ids up to and including END_OF_TEXT; then ours pads with 0 where HF pads with END_OF_TEXT."""
    length = int((ours != 0).sum())
    assert ours[:length].tolist() == reference[:length]
    assert ours[length - 1] == END_OF_TEXT
    assert (ours[length:] == 0).all() and all(i == END_OF_TEXT for i in reference[length:])


@pytest.mark.parametrize("text", PLAIN_PHRASES)
def test_matches_hf_clip_tokenizer(hf_tokenizer, text):
    assert_matches_hf(tokenize(text)[0], hf_ids(hf_tokenizer, text))


@pytest.mark.parametrize("text", list(CLEANED_PHRASES))
def test_cleaning_then_matches_hf(hf_tokenizer, text):
    ours = tokenize(text)[0]
    assert torch.equal(ours, tokenize(CLEANED_PHRASES[text])[0])
    assert_matches_hf(ours, hf_ids(hf_tokenizer, CLEANED_PHRASES[text]))


def test_documented_examples():
    ids = tokenize(["a yellow school bus", "cat"])
    assert ids.shape == (2, CONTEXT) and ids.dtype == torch.long
    assert ids[0].tolist() == [START_OF_TEXT, 320, 4481, 1228, 2840, END_OF_TEXT] + [0] * (CONTEXT - 6)
    assert ids[1].tolist() == [START_OF_TEXT, 2368, END_OF_TEXT] + [0] * (CONTEXT - 3)


def test_too_long_is_truncated_with_end_token(hf_tokenizer):
    text = " ".join(f"word{i}" for i in range(40))
    ids = tokenize(text)[0]
    assert ids[0] == START_OF_TEXT and ids[-1] == END_OF_TEXT and (ids != 0).all()
    assert ids.tolist() == hf_ids(hf_tokenizer, text)
    longer = tokenize(text, context_length=64)[0]
    assert ids[:-1].tolist() == longer[: CONTEXT - 1].tolist()


def test_context_length_and_batch():
    ids = tokenize(("cat", "a dog"), context_length=8)
    assert ids.shape == (2, 8)
    assert ids[1, :4].tolist() == [START_OF_TEXT, 320, 1929, END_OF_TEXT]


def test_special_token_text_is_kept_as_special_token():
    # The official tokenizer's regex matches the literal special-token names first.
    assert tokenize("<end_of_text> cat")[0, :4].tolist() == [START_OF_TEXT, END_OF_TEXT, 2368, END_OF_TEXT]


def test_vocabulary_is_cached_and_complete():
    assert clip_tokenizer() is clip_tokenizer()
    assert len(clip_tokenizer().token_ids) == 49408


def test_word_cache_is_bounded():
    assert clip_tokenizer().word_ids.cache_info().maxsize == WORD_CACHE_SIZE
    tokenizer = BpeTokenizer([("c", "a"), ("ca", "t</w>")], cache_size=3)
    words = ["cat", "dog", "bird", "fish", "cat", "owl"]
    ids = [tokenizer.encode(word) for word in words]
    info = tokenizer.word_ids.cache_info()
    assert info.currsize == 3 and info.misses == 6  # "cat" was evicted before it came back
    assert ids[0] == ids[4] == [tokenizer.token_ids["cat</w>"]]
    assert tokenizer.encode("fish cat owl") == ids[3] + ids[4] + ids[5]
    assert tokenizer.word_ids.cache_info().hits == 3


def test_import_does_not_build_the_tokenizer():
    code = "import conceptseg.model.tokenizer as t; assert t.clip_tokenizer.cache_info().currsize == 0"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        ([], ValueError, "empty list"),
        ("", ValueError, "empty"),
        ("  \t\n", ValueError, "empty"),
        (["cat", ""], ValueError, "index 1"),
        (["cat", 3], TypeError, "must be str"),
        (None, TypeError, "string or a list of strings"),
    ],
)
def test_invalid_input(texts, error, match):
    with pytest.raises(error, match=match):
        tokenize(texts)


def test_invalid_context_length():
    with pytest.raises(ValueError, match="context_length"):
        tokenize("cat", context_length=1)
