"""The lock file ``jpipe.lock``: what each stage read and wrote when it last ran.

Format 2 (this version) records content hashes for every input and output
(``tree:`` hashes for directories, see ``pipeline.workflow.hashing``) and a stat
cache (``file_cache``) that lets a fresh project be checked without reading files.

Format 1 recorded a directory by its (path, size, mtime) listing. ``migrate_v1``
upgrades such a lock in place: a directory whose listing still matches is exactly
what the stage left, so its content hash is computed once and recorded instead.
A directory whose files' mtimes changed since (a project copied without keeping
times) cannot be verified; it is marked ``unverified:`` and the stage that wrote
it shows as stale with a reason that says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import WorkflowError
from pipeline.io import write_json
from pipeline.paths import LOCK_FILENAME  # noqa: F401  (re-exported)
from pipeline.workflow.hashing import LISTING_PREFIX, FileHasher

LOCK_FORMAT = 2
UNVERIFIED_PREFIX = "unverified:"
_HASHED_PARTS = ("inputs", "optional_inputs", "outputs")


def new_lock() -> dict[str, Any]:
    return {"format": LOCK_FORMAT, "stages": {}, "file_cache": {}}


def read_lock(path: Path) -> dict[str, Any]:
    """The parsed lock (a new, empty one when the file does not exist). Does not migrate."""
    if not path.exists():
        return new_lock()
    try:
        with open(path, encoding="utf-8") as handle:
            lock = json.load(handle)
        if not isinstance(lock, dict):
            raise ValueError("not a JSON object")
    except (json.JSONDecodeError, OSError, ValueError) as exc:
        raise WorkflowError(
            "E403", f"{path} is unreadable ({exc}).", hint="Delete it and run `jpipe run` to rebuild what is stale."
        ) from None
    found = lock.get("format", 1)
    if not isinstance(found, int) or found > LOCK_FORMAT:
        raise WorkflowError(
            "E406",
            f"{path} has lock format {found}; this jpipe ({__version__}) reads lock formats up to {LOCK_FORMAT}.",
            hint="Upgrade jpipe, or delete jpipe.lock and run `jpipe run` to rebuild every stage.",
        )
    lock.setdefault("stages", {})
    lock.setdefault("file_cache", {})
    return lock


def migrate_v1(lock: dict[str, Any], hasher: FileHasher) -> list[str]:
    """Upgrade a format-1 lock to format 2 in place; returns the directories it could not verify.

    Files were already recorded by content (sha256) in format 1 and stay as they are.
    """
    listings: dict[str, str | None] = {}
    unverified: set[str] = set()
    for entry in lock["stages"].values():
        for part in _HASHED_PARTS:
            recorded = entry.get(part, {})
            for path, value in recorded.items():
                if not (isinstance(value, str) and value.startswith(LISTING_PREFIX)):
                    continue
                if path not in listings:
                    listings[path] = hasher.listing(path)
                if listings[path] == value:
                    # unchanged since the stage recorded it: its content now is the content it had
                    recorded[path] = hasher.hash(path)
                else:
                    recorded[path] = UNVERIFIED_PREFIX + value
                    unverified.add(path)
    lock["format"] = LOCK_FORMAT
    lock["migrated_from"] = 1
    return sorted(unverified)


def write_lock(path: Path, lock: dict[str, Any], cache: dict[str, dict[str, Any]]) -> None:
    """Write ``lock`` atomically, with the stat cache of the paths a stage still references."""
    lock["format"] = LOCK_FORMAT
    lock["jpipe_version"] = __version__
    referenced = {p for entry in lock["stages"].values() for part in _HASHED_PARTS for p in entry.get(part, {})}
    lock["file_cache"] = {p: value for p, value in cache.items() if p in referenced}
    write_json(path, lock, indent=1)
