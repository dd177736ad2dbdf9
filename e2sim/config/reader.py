"""Checked reading of a parsed spec: every problem is recorded with its key path, then raised together.

A reader never raises on a bad value; it records a :class:`Problem` and returns ``None`` so that
reading goes on and the user sees every mistake at once. Callers build their frozen objects only
after :meth:`ProblemLog.raise_if_any`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any

from e2sim.config.errors import Problem, SpecError

MISSING: Any = object()


class Invalid(ValueError):
    """Raised by a check function; its text says what the value must be."""


class ProblemLog:
    """The problems found in one spec document."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.source, path, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise SpecError(self.problems)


def describe(value: Any) -> str:
    """A short rendering of a user's value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def read_fields(s: Section, cls: type, checks: Mapping[str, Callable[[Any], Any]], context: str = "") -> Any:
    """The frozen dataclass ``cls`` from the mapping ``s``: every field read with its check in
    ``checks``, its default the dataclass's own; then unknown keys are reported (``context`` as in
    :meth:`Section.finish`)."""
    values = {f.name: s.read(f.name, checks[f.name], default=f.default) for f in dataclasses.fields(cls)}
    s.finish(context)
    return cls(**values)


class Section:
    """A mapping of a spec, read key by key; unknown keys are reported by :meth:`finish`."""

    def __init__(self, data: Mapping, path: str, log: ProblemLog):
        self.data = data
        self.path = path
        self.log = log
        self._known: list[str] = []

    @classmethod
    def of(cls, value: Any, path: str, log: ProblemLog) -> Section | None:
        """Wrap ``value`` if it is a mapping; otherwise record a problem and return None."""
        if isinstance(value, Mapping):
            return cls(value, path, log)
        log.add(path, f"must be a mapping, got {describe(value)}")
        return None

    def key_path(self, key: str) -> str:
        return join_path(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def _lookup(self, key: str, default: Any) -> tuple[bool, Any]:
        """Mark ``key`` as known; (True, value) if present, else (False, default) and a missing
        required key is recorded (default ``None`` then)."""
        self._known.append(key)
        if key in self.data:
            return True, self.data[key]
        if default is MISSING:
            self.log.add(self.key_path(key), "missing required key")
            return False, None
        return False, default

    def read(self, key: str, check: Callable[[Any], Any], default: Any = MISSING) -> Any:
        """Return ``check(value)``; a missing required key or a failed check is recorded (-> None)."""
        found, value = self._lookup(key, default)
        if not found:
            return value
        try:
            return check(value)
        except Invalid as exc:
            self.log.add(self.key_path(key), f"{exc}, got {describe(value)}")
            return None

    def section(self, key: str, default: Any = MISSING) -> Section | None:
        """The sub-mapping at ``key``; an absent optional one reads as an empty mapping."""
        found, value = self._lookup(key, default)
        if not found:
            return None if value is None else Section({}, self.key_path(key), self.log)
        return Section.of(value, self.key_path(key), self.log)

    def items(self, key: str, default: Any = MISSING) -> list[tuple[str, Any]] | None:
        """The elements of the list at ``key`` with their paths; None if absent (optional) or invalid."""
        found, value = self._lookup(key, default)
        if not found:
            return None
        if not isinstance(value, list) or not value:
            self.log.add(self.key_path(key), f"must be a non-empty list, got {describe(value)}")
            return None
        return [(join_path(self.key_path(key), i), item) for i, item in enumerate(value)]

    def read_list(
        self,
        key: str,
        check_item: Callable[[Any], Any],
        default: Any = MISSING,
        length: int | None = None,
        check_all: Callable[[tuple], tuple] | None = None,
    ) -> tuple | None:
        """A list whose items are checked one by one (problems name ``key[i]``), then as a whole."""
        found, value = self._lookup(key, default)
        if not found:
            return value
        path = self.key_path(key)
        if not isinstance(value, list) or not value or (length is not None and len(value) != length):
            wanted = f"a list of {length}" if length else "a non-empty list"
            self.log.add(path, f"must be {wanted}, got {describe(value)}")
            return None
        items, failed = [], False
        for i, item in enumerate(value):
            try:
                items.append(check_item(item))
            except Invalid as exc:
                self.log.add(join_path(path, i), f"{exc}, got {describe(item)}")
                failed = True
        if failed:
            return None
        if check_all is None:
            return tuple(items)
        try:
            return check_all(tuple(items))
        except Invalid as exc:
            self.log.add(path, str(exc))
            return None

    def read_pair(self, key: str, minimum: int, default: Any = MISSING, maximum: int = 1024) -> tuple[int, int] | None:
        """``3`` (read as ``(3, 3)``) or ``[3, 5]``; each integer from ``minimum`` to ``maximum``."""
        value = self.data.get(key)
        check = at_most(positive_int if minimum == 1 else non_negative_int, maximum)
        if _is_int(value):
            number = self.read(key, check)
            return None if number is None else (number, number)
        return self.read_list(key, check, default, length=2)

    def finish(self, context: str = "") -> None:
        """Report every key that was not read (typos must not be silently ignored)."""
        for key in self.data:
            if key in self._known:
                continue
            if not isinstance(key, str):
                self.log.add(self.path, f"keys must be strings, got {describe(key)}")
                continue
            close = difflib.get_close_matches(key, self._known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            known = f" (known keys{context}: {', '.join(sorted(set(self._known)))})"
            self.log.add(self.key_path(key), f"unknown key{hint}{known}")


# --- check functions: return the checked (and possibly converted) value or raise Invalid ----------


def at_most(check: Callable[[Any], Any], high: float, unit: str = "") -> Callable[[Any], Any]:
    """``check``, and then at most ``high``: every numeric key has a documented valid range, so that
    a typo or a sweep cannot ask for a physically meaningless value (1e308 MHz, 2**63 images)."""

    def bounded(value: Any) -> Any:
        number = check(value)
        if number > high:
            raise Invalid(f"must be at most {high:,g}{unit}")
        return number

    return bounded


def string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise Invalid("must be a positive integer")
    return value


def non_negative_int(value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise Invalid("must be a non-negative integer")
    return value


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def positive_number(value: Any) -> float:
    number = _finite_number(value)
    if number is None or number <= 0:
        raise Invalid("must be a positive number")
    return number


def non_negative_number(value: Any) -> float:
    number = _finite_number(value)
    if number is None or number < 0:
        raise Invalid("must be a non-negative number")
    return number


def fraction_below_one(value: Any) -> float:
    number = non_negative_number(value)
    if number >= 1:
        raise Invalid("must be a number in [0, 1)")
    return number


def fraction_below_one_positive(value: Any) -> float:
    number = positive_number(value)
    if number >= 1:
        raise Invalid("must be a number in (0, 1)")
    return number


def at_least_one(value: Any) -> float:
    number = positive_number(value)
    if number < 1:
        raise Invalid("must be a number >= 1")
    return number


def fraction_positive(value: Any) -> float:
    number = positive_number(value)
    if number > 1:
        raise Invalid("must be a number in (0, 1]")
    return number


def one_of(*options: Any) -> Callable[[Any], Any]:
    """A check that accepts exactly one of ``options`` (strings or integers)."""
    listed = ", ".join(str(o) for o in options)

    def check(value: Any) -> Any:
        if not any(type(value) is type(o) and value == o for o in options):
            close = difflib.get_close_matches(value, [str(o) for o in options], n=1) if isinstance(value, str) else []
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise Invalid(f"must be one of {listed}{hint}")
        return value

    return check


class Pair:
    """Marks a key that takes ``3`` or ``[3, 5]``: integers at least ``minimum`` (read as a pair)."""

    def __init__(self, minimum: int):
        self.minimum = minimum
