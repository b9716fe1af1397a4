"""Readable words for hex digests, with the interface of django-q2's `django_q.humanhash`.

A digest's bytes are split into `words` runs, each run XOR-folded into one
byte, and each byte named by a word of a 256-word list. The default list is
the one task names use (`django_q.names.WORDS`), so the words differ from
django-q2's for the same digest; pass django-q2's list to `HumanHasher` to get
its words back. Task names themselves come from `django_q.names.humanize`.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from functools import reduce
from operator import xor
from typing import Any

from .names import WORDS

__all__ = ["DEFAULT_HASHER", "DEFAULT_WORDLIST", "HumanHasher", "humanize", "uuid"]

DEFAULT_WORDLIST: tuple[str, ...] = tuple(WORDS)


class HumanHasher:
    """Turns hex digests into a few words of a 256-word list; the same digest always gives the same words."""

    def __init__(self, wordlist: Sequence[str] = DEFAULT_WORDLIST) -> None:
        if len(wordlist) != 256:
            raise ValueError(f"a HumanHasher wordlist must have exactly 256 words, got {len(wordlist)}")
        self.wordlist = wordlist

    def humanize(self, hexdigest: str, words: int = 4, separator: str = "-") -> str:
        """`words` words of the list for `hexdigest` (hex digits, at least 2 per word), joined by `separator`."""
        if not isinstance(hexdigest, str):
            raise TypeError(f"humanize takes a hex digest as a str, got {type(hexdigest).__name__}")
        try:
            # An odd last digit is left out, as pairs of digits make the bytes.
            values = list(bytes.fromhex(hexdigest[: len(hexdigest) // 2 * 2]))
        except ValueError:
            raise ValueError(f"humanize takes a hex digest, got {hexdigest!r}") from None
        return separator.join(self.wordlist[value] for value in self.compress(values, words))

    @staticmethod
    def compress(values: Sequence[int], target: int) -> list[int]:
        """`values` (bytes as ints) folded into `target` bytes: equal runs, the last taking what is left, XORed."""
        if target < 1:
            raise ValueError(f"compress needs a target of at least 1, got {target}")
        if target > len(values):
            raise ValueError(f"compress needs at least {target} input bytes, got {len(values)}")
        size = len(values) // target
        runs = [list(values[i * size : (i + 1) * size]) for i in range(target)]
        runs[-1].extend(values[target * size :])
        return [reduce(xor, run, 0) for run in runs]

    def uuid(self, **params: Any) -> tuple[str, str]:
        """A new random id and its words: (words, 32 hex digits); params go to humanize."""
        digest = uuidlib.uuid4().hex
        return self.humanize(digest, **params), digest


DEFAULT_HASHER = HumanHasher()
uuid = DEFAULT_HASHER.uuid
humanize = DEFAULT_HASHER.humanize
