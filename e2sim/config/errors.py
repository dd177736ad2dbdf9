"""The one error type for bad specs: it carries every problem found, each with its file and key path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec.

    source: the file it came from (or a label such as ``<workload dict>``);
    path: the key path inside it, e.g. ``pe_array.rows`` or ``model.layers[2].kernel``
    ("" when the problem concerns the whole document);
    message: what is wrong, in one line.
    """

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}"


class SpecError(ValueError):
    """A workload or hardware spec is invalid; ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]):
        if not problems:
            raise ValueError("SpecError needs at least one problem")
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, source: str, path: str, message: str) -> SpecError:
        return cls([Problem(source, path, message)])


class DataError(ValueError):
    """A dataset file is missing or corrupt; the message names the path."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used (missing, corrupt, or from another workload); names the path."""
