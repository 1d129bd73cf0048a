"""Captions for CIFAR-10 built from WordNet 3.0: each class's noun synset gives its lemmas, its gloss and its
hyponyms' lemmas, which fill a few caption templates ("a photo of a dog", "a small image of a corgi, a kind of dog",
"a dog: a member of the genus Canis ..."). These captions name the class (or a kind of it) in almost every phrasing:
a model trained on them learns from paired text, but the text carries the label.

The synsets are pinned by their WordNet 3.0 offsets (``airplane.n.01`` ... ``truck.n.01``; CIFAR's "automobile" is
``car.n.01``, whose lemmas include automobile) and checked against their first lemma when read.

Shapes:
    ``class_captions(folder, per_class) -> list[list[str]]``: ``per_class`` captions (at most) for each of the 10
    classes, in CIFAR-10's class order, the same on every call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import zip_longest
from pathlib import Path

from maezoo.data.sources import dataset_file_error
from maezoo.data.wordnet import SynsetLines, WordNetEntry

#: CIFAR-10's classes (torchvision / ImageFolder order) -> (WordNet 3.0 noun offset, its first lemma)
CIFAR10_SYNSETS: dict[str, tuple[str, str]] = {
    "airplane": ("02691156", "airplane"),  # airplane.n.01
    "automobile": ("02958343", "car"),  # car.n.01 = automobile.n.01
    "bird": ("01503061", "bird"),  # bird.n.01
    "cat": ("02121620", "cat"),  # cat.n.01, the true cat
    "deer": ("02430045", "deer"),  # deer.n.01
    "dog": ("02084071", "dog"),  # dog.n.01
    "frog": ("01639765", "frog"),  # frog.n.01
    "horse": ("02374451", "horse"),  # horse.n.01
    "ship": ("04194289", "ship"),  # ship.n.01
    "truck": ("04490091", "truck"),  # truck.n.01
}
NAME_TEMPLATES = ("a photo of {a}.", "a small image of {a}.", "a blurry photo of {the}.", "a picture showing {a}.",
                  "a low resolution photo of {a}.", "a close-up photo of {the}.")
HYPONYM_TEMPLATES = ("a small image of {a}, a kind of {cls}.", "a photo of {a}.", "{a}, which is {cls_a}.")
GLOSS_TEMPLATES = ("a photo of {a}: {gloss}.", "{gloss}.", "a picture of {a}, {gloss}.")


def article(word: str) -> str:
    """``word`` with "a" or "an" (by its first letter)."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def short_gloss(entry: WordNetEntry) -> str:
    """The definition's first clause (before ``;`` or ``:``), without parenthetical remarks."""
    return " ".join(re.sub(r"\([^)]*\)", " ", entry.definition.split(";")[0].split(":")[0]).split())


def hyponym_words(entry: WordNetEntry, synsets: Mapping[str, WordNetEntry], depth: int = 2) -> list[str]:
    """First lemmas of the hyponyms (``~``) down to ``depth`` levels, nearest first, each word once."""
    out: list[str] = []
    level = [entry]
    for _ in range(depth):
        level = [synsets[o] for e in level for o in e.related("~") if o in synsets]
        for e in level:
            w = e.words()[0]
            if w not in out:
                out.append(w)
    return out


def phrasings(entry: WordNetEntry, synsets: Mapping[str, WordNetEntry]) -> list[str]:
    """Every caption of one class: its lemmas, its gloss and its hyponyms in templates, interleaved by kind so that a
    prefix of the list mixes all three."""
    lemmas = entry.words()
    name = lemmas[0]
    # the first lemma in every name template, each other lemma (synonyms: auto, motorcar ...) in two of them
    named = [(name, t) for t in NAME_TEMPLATES]
    named += [(w, NAME_TEMPLATES[(2 * i + k) % len(NAME_TEMPLATES)]) for i, w in enumerate(lemmas[1:]) for k in (0, 1)]
    by_name = [t.format(a=article(w), the=f"the {w}") for w, t in named]
    gloss = short_gloss(entry)
    by_gloss = [t.format(a=article(w), gloss=gloss) for t, w in zip(GLOSS_TEMPLATES, lemmas * 3, strict=False)]
    by_kind = [HYPONYM_TEMPLATES[j % len(HYPONYM_TEMPLATES)].format(a=article(h), cls=name, cls_a=article(name))
               for j, h in enumerate(hyponym_words(entry, synsets))]
    out: list[str] = []
    for group in zip_longest(by_name, by_gloss, by_kind):
        out += [c for c in group if c is not None and c not in out]
    return out


def class_captions(folder: Path, per_class: int, classes: dict[str, tuple[str, str]] = CIFAR10_SYNSETS
                   ) -> list[list[str]]:
    """``per_class`` captions (fewer when WordNet offers fewer) for each class, from ``folder``'s ``data.noun``."""
    synsets = SynsetLines(folder, "noun")
    out = []
    for cls, (offset, lemma) in classes.items():
        entry = synsets.get(offset)
        if entry is None or entry.words()[0] != lemma:
            raise dataset_file_error(folder / "data.noun", f"synset {offset} is not {lemma!r} (needed for the class "
                                     f"{cls!r}); this is not WordNet 3.0", "use WordNet 3.0's data files")
        out.append(phrasings(entry, synsets)[:per_class])
    return out


__all__ = ["CIFAR10_SYNSETS", "article", "class_captions", "hyponym_words", "phrasings", "short_gloss"]
