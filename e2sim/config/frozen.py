"""An immutable mapping that pickles and hashes, for the fields of frozen domain objects (specs,
graphs, tables) that travel to worker processes and key caches."""

from __future__ import annotations

from typing import Any, NoReturn


class FrozenDict(dict):
    """A dict that cannot change after construction; hashable when its values are, picklable.
    Lookups are a plain dict's."""

    __slots__ = ("_hash",)

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is immutable")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        try:
            return self._hash
        except AttributeError:
            self._hash = hash(tuple(self.items()))
            return self._hash

    def __reduce__(self):
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def copy(self) -> dict:
        """A mutable copy."""
        return dict(self)
