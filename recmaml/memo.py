"""Serving's derived tables (the catalog's item vectors, EASE's index as int64, the support embedding in
float64, the popularity of every window), computed at first use and kept on their owner while the tensors
they derive from are unchanged."""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

import torch

T = TypeVar("T")


def kept_while_unchanged(owner: object, slot: str, sources: Iterable[torch.Tensor], compute: Callable[[], T],
                         *settings) -> T:
    """compute(), kept on `owner` as attribute `slot` and computed again when one of `sources` has changed
    (in place: its version counter; replaced or moved to another device: its storage) or `settings`
    differ from the kept ones. Set `slot` to None to drop it (a replaced tensor's freed address may come
    back for its successor)."""
    key = (*((t.data_ptr(), t._version) for t in sources), *settings)
    kept = getattr(owner, slot, None)
    if kept is None or kept[0] != key:
        kept = (key, compute())
        setattr(owner, slot, kept)
    return kept[1]
