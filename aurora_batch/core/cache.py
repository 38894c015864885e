"""A process-wide cache that keeps what searches load, the least recently used out first over a size budget."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SizedCache(Generic[V]):
    """Values by key, least recently used dropped first while their total ``size`` exceeds ``budget()``; the value
    just made always stays.  Keys name what a value was made from (a month's parts and versions), so a changed
    month is a new key and its old value ages out."""

    def __init__(self, size: Callable[[V], float], budget: Callable[[], float]):
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._size, self._budget = size, budget

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value kept for ``key``, or ``make()``'s, kept."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = make()
        limit = self._budget()
        while len(self._items) > 1 and sum(map(self._size, self._items.values())) > limit:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)
