"""CLIP byte-level BPE tokenizer: text prompts -> the [B, 32] token ids SAM 3's text encoder reads.

Same ids as OpenAI CLIP / open_clip's `SimpleTokenizer` with the vocabulary shipped in
`conceptseg/assets/bpe_simple_vocab_16e6.txt.gz`: text is cleaned (ftfy, HTML entities, whitespace,
lower-case), split into words by a regex, each word's UTF-8 bytes are merged by BPE into vocabulary tokens.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import itertools
from collections.abc import Sequence

import ftfy
import regex
import torch

START_OF_TEXT = 49406
END_OF_TEXT = 49407
PAD = 0  # SAM 3 pads with 0 and masks `ids == 0`; note id 0 is also the byte "!"
EXEMPLAR_TEXT = "visual"  # the official placeholder phrase of prompts made of exemplars only

WORD_CACHE_SIZE = 10_000  # distinct words whose ids `BpeTokenizer` keeps (a few MB at most)
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_NUM_MERGES = 49152 - 256 - 2  # CLIP's 49,408-token vocabulary: 512 byte tokens + merges + 2 specials
_SPECIAL_TOKENS = {"<start_of_text>": START_OF_TEXT, "<end_of_text>": END_OF_TEXT}
_WORD_PATTERN = regex.compile(
    r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+", regex.IGNORECASE
)


def _byte_alphabet() -> dict[int, str]:
    """Map every byte to a printable unicode character, so BPE never sees whitespace or control chars.

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to chr(256), chr(257), ... in byte order.
    The dict order (printable bytes first) is also the order of the first 256 vocabulary ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in alphabet]
    alphabet.update({byte: chr(256 + i) for i, byte in enumerate(others)})
    return alphabet


def clean_text(text: str) -> str:
    """Fix mojibake (ftfy), unescape HTML entities (twice, for double-escaped text), collapse whitespace, lower."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


class BpeTokenizer:
    """Byte-level BPE over an ordered merge list; `encode` returns ids without start/end tokens.

    The ids of the last `cache_size` distinct words are kept (least recently used dropped first): prompts repeat
    a small vocabulary, while a long-running server may see unboundedly many distinct words.
    """

    def __init__(self, merges: list[tuple[str, str]], cache_size: int = WORD_CACHE_SIZE) -> None:
        self.byte_alphabet = _byte_alphabet()
        symbols = list(self.byte_alphabet.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
        self.token_ids = {token: i for i, token in enumerate(vocab)}
        self.token_ids.update(_SPECIAL_TOKENS)
        self.merge_rank = {pair: rank for rank, pair in enumerate(merges)}
        self.word_ids = functools.lru_cache(maxsize=cache_size)(self._word_ids)

    def _merge_word(self, word: str) -> list[str]:
        """Greedy BPE: repeatedly merge the adjacent pair with the lowest merge rank. `</w>` marks word end."""
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = set(itertools.pairwise(parts))
            best = min(pairs, key=lambda pair: self.merge_rank.get(pair, float("inf")))
            if best not in self.merge_rank:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """One regex word -> its token ids (uncached; `word_ids` is the cached version)."""
        if word in _SPECIAL_TOKENS:
            return (_SPECIAL_TOKENS[word],)
        mapped = "".join(self.byte_alphabet[b] for b in word.encode("utf-8"))
        return tuple(self.token_ids[part] for part in self._merge_word(mapped))

    def encode(self, text: str) -> list[int]:
        """Cleaned text -> BPE token ids (no start/end tokens)."""
        return [i for word in _WORD_PATTERN.findall(clean_text(text)) for i in self.word_ids(word)]


@functools.lru_cache(maxsize=1)
def clip_tokenizer() -> BpeTokenizer:
    """The CLIP tokenizer built from the shipped BPE file (built on first use, then cached)."""
    with (importlib.resources.files("conceptseg") / "assets" / _BPE_FILE).open("rb") as f:
        lines = gzip.decompress(f.read()).decode("utf-8").split("\n")
    # line 0 is a version header; only the first _NUM_MERGES merges belong to CLIP's vocabulary
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    return BpeTokenizer(merges)


def tokenize(texts: str | Sequence[str], context_length: int = 32) -> torch.LongTensor:
    """Text prompt(s) -> token ids [B, context_length] (int64, CPU).

    Each row is START_OF_TEXT + tokens + END_OF_TEXT, right-padded with 0. Too long prompts are cut to
    `context_length` and their last token is replaced by END_OF_TEXT.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"tokenize expects a string or a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError("tokenize got an empty list; pass at least one text prompt")
    if not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length must be an int >= 2 (room for start and end tokens), got {context_length!r}")
    tokenizer = clip_tokenizer()
    ids = torch.full((len(texts), context_length), PAD, dtype=torch.long)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text prompts must be str, got {type(text).__name__} at index {row}: {text!r}")
        tokens = tokenizer.encode(text)
        if not tokens:
            raise ValueError(f"text prompt at index {row} is empty after cleaning ({text!r}); pass a word or phrase")
        tokens = [START_OF_TEXT, *tokens[: context_length - 2], END_OF_TEXT]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids
