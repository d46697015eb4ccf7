"""Vocabulary and noun-phrase grammar of the synthetic concept world.

An object has four attributes (shape, colour, size, fill pattern). A noun phrase always names a shape and
may add a size, a colour and a pattern, in that order: "star", "red stars", "large blue ring",
"small green dotted hexagons". A phrase refers to an object iff every attribute it names matches;
singular and plural forms mean the same thing (all matching instances).

Every vocabulary is a tuple, never a set, so that iteration order (and hence generated data) does not
depend on Python's string-hash randomisation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "hexagon", "ring", "cross", "heart", "diamond", "crescent",
)
PLURALS: dict[str, str] = {shape: shape + "es" if shape == "cross" else shape + "s" for shape in SHAPES}

# Saturated colours, far from the muted background palette so that colour names are unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 130, 20),
    "yellow": (235, 210, 30),
    "green": (40, 160, 55),
    "cyan": (30, 195, 210),
    "blue": (35, 75, 215),
    "purple": (135, 55, 190),
    "pink": (240, 110, 185),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
SIZES: tuple[str, ...] = ("small", "large")
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted")
# Every attribute an object has and the words for its values (an object has one of each).
ATTRIBUTE_VOCABULARIES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES, "pattern": PATTERNS,
}

# Colour-shape pairs kept out of the training data entirely (see ConceptWorld's `split`).
HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "ring"),
    ("blue", "triangle"),
    ("yellow", "heart"),
)


@dataclass(frozen=True)
class ObjectAttributes:
    """The nameable attributes of one object in a scene."""

    shape: str
    colour: str
    size: str
    pattern: str

    def __post_init__(self) -> None:
        for kind, vocabulary in ATTRIBUTE_VOCABULARIES.items():
            _check_word(getattr(self, kind), vocabulary, kind)

    @property
    def indices(self) -> tuple[int, ...]:
        """Each attribute's position in its vocabulary, in `ATTRIBUTE_VOCABULARIES` order (classifier labels)."""
        return tuple(words.index(getattr(self, kind)) for kind, words in ATTRIBUTE_VOCABULARIES.items())


@dataclass(frozen=True)
class Concept:
    """A noun phrase: a shape plus optional size, colour and pattern; `None` means "not named"."""

    shape: str
    colour: str | None = None
    size: str | None = None
    pattern: str | None = None
    plural: bool = False

    def __post_init__(self) -> None:
        for kind, vocabulary in ATTRIBUTE_VOCABULARIES.items():
            if getattr(self, kind) is not None or kind == "shape":
                _check_word(getattr(self, kind), vocabulary, kind)

    @property
    def text(self) -> str:
        """The phrase in the fixed adjective order: size, colour, pattern, noun."""
        noun = PLURALS[self.shape] if self.plural else self.shape
        words = [self.size, self.colour, self.pattern, noun]
        return " ".join(word for word in words if word is not None)

    @property
    def named_attributes(self) -> tuple[str, ...]:
        """Names of the attributes this phrase constrains, always including "shape"."""
        optional = ("colour", "size", "pattern")
        return ("shape",) + tuple(name for name in optional if getattr(self, name) is not None)

    @property
    def names_heldout_combo(self) -> bool:
        """True when the phrase names a held-out colour-shape pair."""
        return (self.colour, self.shape) in HELDOUT_COMBOS

    def matches(self, obj: ObjectAttributes) -> bool:
        """True iff every attribute named in the phrase equals the object's."""
        return all(getattr(self, name) == getattr(obj, name) for name in self.named_attributes)

    def with_number(self, plural: bool) -> Concept:
        return replace(self, plural=plural)


def classify_query(concept: Concept, objects: list[ObjectAttributes]) -> str:
    """How a phrase relates to a scene: "positive" (something matches), "hard_negative" (nothing
    matches but an object shares the phrase's shape or its named colour) or "easy_negative"."""
    if any(concept.matches(obj) for obj in objects):
        return "positive"
    for obj in objects:
        if obj.shape == concept.shape or (concept.colour is not None and obj.colour == concept.colour):
            return "hard_negative"
    return "easy_negative"


def parse_phrase(text: str) -> Concept:
    """Parse a phrase of the grammar ("small green dotted hexagons") back into a Concept."""
    words = text.lower().split()
    if not words:
        raise ValueError("empty phrase: expected e.g. 'red star' or 'large blue rings'")
    noun, adjectives = words[-1], words[:-1]
    singular_of = {plural: shape for shape, plural in PLURALS.items()}
    if noun in SHAPES:
        shape, plural = noun, False
    elif noun in singular_of:
        shape, plural = singular_of[noun], True
    else:
        raise ValueError(f"phrase {text!r} must end with a shape noun, one of {SHAPES} or their plurals")
    named: dict[str, str] = {}
    for word in adjectives:
        kind = _adjective_kind(word)
        if kind is None:
            raise ValueError(f"unknown word {word!r} in phrase {text!r}; adjectives are sizes {SIZES}, "
                             f"colours {COLOUR_NAMES} and patterns {PATTERNS}")
        if kind in named:
            raise ValueError(f"phrase {text!r} names the {kind} twice")
        named[kind] = word
    return Concept(shape=shape, plural=plural, **named)


def _adjective_kind(word: str) -> str | None:
    for kind, vocabulary in ATTRIBUTE_VOCABULARIES.items():
        if kind != "shape" and word in vocabulary:
            return kind
    return None


def _check_word(value: str, vocabulary: tuple[str, ...], kind: str) -> None:
    if value not in vocabulary:
        raise ValueError(f"unknown {kind} {value!r}; choose one of {vocabulary}")
