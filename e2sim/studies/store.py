"""The result store of sweeps: one SQLite file. A point is written, with everything it produced,
in one transaction when it finishes, keyed by the hash of its resolved specs and the e2sim
version: a sweep killed at any moment loses no finished point, and started again runs none twice."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    key TEXT PRIMARY KEY,      -- sha256 of the resolved specs, settings and e2sim version
    sweep TEXT NOT NULL,       -- the sweep's name
    position INTEGER,          -- in the sweep's sampled sequence (grid, random) or the trial number (optuna)
    params TEXT NOT NULL,      -- JSON: axis path -> value
    status TEXT NOT NULL,      -- done | failed | infeasible | pruned (stopped by successive halving)
    metrics TEXT,              -- JSON: objective -> value (done points)
    error TEXT,                -- why a point failed or is infeasible
    seconds REAL,              -- evaluation time on the worker
    finished REAL              -- unix time it was stored
);
CREATE TABLE IF NOT EXISTS rungs (
    sweep TEXT NOT NULL,
    training TEXT NOT NULL,    -- a training run of successive halving (sha256 of its points' keys)
    epochs INTEGER NOT NULL,   -- trained by the end of the rung
    accuracy REAL,             -- test accuracy after those epochs (NULL: the training failed)
    error TEXT,
    PRIMARY KEY (sweep, training, epochs)
);
"""
STATUSES = ("done", "failed", "infeasible", "pruned")


class Store:
    """Points of one or more sweeps in a SQLite file (created when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed point survives a kill, and power loss
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def finished(self, keys: Iterable[str] | None = None) -> set[str]:
        """The keys among ``keys`` (all when None) that are stored."""
        stored = {row[0] for row in self.db.execute("SELECT key FROM points")}
        return stored if keys is None else stored & set(keys)

    def record(self, sweep: str, rows: Sequence[tuple[str, int, Mapping[str, Any], str, Mapping | None, str | None,
                                                      float]]) -> None:  # fmt: skip
        """Store finished points (key, position, params, status, metrics, error, seconds) in one
        transaction; a key stored already stays as it was (a point never runs twice)."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(key, sweep, position, json.dumps(dict(params), sort_keys=True), status,
                  json.dumps(dict(metrics), sort_keys=True) if metrics is not None else None, error, seconds, now)
                 for key, position, params, status, metrics, error, seconds in rows],
            )  # fmt: skip

    def rows(self, sweep: str | None = None) -> list[dict[str, Any]]:
        """Stored points (of ``sweep``), in sampled order: params and metrics parsed."""
        query = "SELECT key, sweep, position, params, status, metrics, error, seconds FROM points"
        args: tuple = ()
        if sweep is not None:
            query, args = query + " WHERE sweep = ?", (sweep,)
        out = []
        for key, name, position, params, status, metrics, error, seconds in self.db.execute(
            query + " ORDER BY position, key", args
        ):
            out.append({"key": key, "sweep": name, "position": position, "params": json.loads(params),
                        "status": status, "metrics": json.loads(metrics) if metrics else {}, "error": error,
                        "seconds": seconds})  # fmt: skip
        return out

    def counts(self, sweep: str) -> dict[str, int]:
        found = dict(self.db.execute("SELECT status, COUNT(*) FROM points WHERE sweep = ? GROUP BY status", (sweep,)))
        return {status: found.get(status, 0) for status in STATUSES}

    def record_rung(self, sweep: str, training: str, epochs: int, accuracy: float | None, error: str | None) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO rungs VALUES (?, ?, ?, ?, ?)",
                            (sweep, training, epochs, accuracy, error))  # fmt: skip

    def rung(self, sweep: str, epochs: int) -> dict[str, tuple[float | None, str | None]]:
        """Training key -> (accuracy, error) of the trainings that finished the rung of ``epochs``."""
        query = "SELECT training, accuracy, error FROM rungs WHERE sweep = ? AND epochs = ?"
        return {training: (accuracy, error) for training, accuracy, error in self.db.execute(query, (sweep, epochs))}
