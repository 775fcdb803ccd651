"""Content hashes of stage inputs and outputs, with a (size, mtime) stat cache.

A file hashes to its sha256. A directory hashes to ``tree:`` + the sha256 of its
sorted ``relative path \\0 file sha256`` lines: its *content*, so a directory copied
or rewritten with the same bytes (new mtimes) keeps its hash. That is what lets the
runner cut off a rebuild when an upstream stage reran and wrote identical outputs.

Reading every artifact on each ``jpipe status`` would take seconds on a trained
project, so each hash is cached with what ``stat`` says about the path: a file's
(size, mtime_ns), a directory's *listing* (sha256 of every file's relative path,
size and mtime_ns). While those match, the cached hash is used and no content is read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from pipeline.io import sha256_file

TREE_PREFIX = "tree:"
# Lock format 1 recorded directories by their listing, not their content.
LISTING_PREFIX = "dir:"


def _walk(root: Path) -> list[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every file under ``root``, sorted by path parts.

    Sorted by parts (``a/b`` before ``a-c``), as lock format 1 sorted ``Path`` objects,
    so that its listing hashes can be recomputed for migration. Symlinked directories
    are not followed (as ``Path.rglob``).
    """
    found: list[tuple[tuple[str, ...], int, int]] = []
    stack: list[tuple[str, ...]] = [()]
    while stack:
        parts = stack.pop()
        with os.scandir(root.joinpath(*parts)) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((*parts, entry.name))
                elif entry.is_file():
                    info = entry.stat()
                    found.append(((*parts, entry.name), info.st_size, info.st_mtime_ns))
    found.sort()
    return [("/".join(parts), size, mtime) for parts, size, mtime in found]


def listing_digest(files: list[tuple[str, int, int]]) -> str:
    """The stat-level fingerprint of a directory (lock format 1's directory hash)."""
    digest = hashlib.sha256()
    for relative, size, mtime_ns in files:
        digest.update(f"{relative}\0{size}\0{mtime_ns}\n".encode())
    return LISTING_PREFIX + digest.hexdigest()


class FileHasher:
    """Content hashes of project paths; ``cache`` maps a path to what its last hash was based on.

    Cache entries: ``{"size", "mtime_ns", "sha256"}`` for a file, ``{"listing", "sha256"}``
    for a directory. Hashes are also memoised per pass (``reset()`` starts a new one), so a
    path read by several stages is stat'ed once per ``status``.
    """

    def __init__(self, project_dir: Path, cache: dict[str, dict[str, Any]] | None = None) -> None:
        self.project_dir = project_dir
        self.cache = dict(cache or {})
        self._memo: dict[str, str | None] = {}

    def reset(self) -> None:
        """Forget this pass's memo: the next ``hash`` stats the files again."""
        self._memo.clear()

    def _abs(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.project_dir / path

    def hash(self, relative: str) -> str | None:
        """Content hash of a file or directory; None when it does not exist."""
        if relative in self._memo:
            return self._memo[relative]
        path = self._abs(relative)
        try:
            info = path.stat()
        except FileNotFoundError:
            digest = None
        else:
            digest = self._hash_dir(relative, path) if stat.S_ISDIR(info.st_mode) else self._hash_file(relative, path, info)
        self._memo[relative] = digest
        return digest

    def listing(self, relative: str) -> str | None:
        """A directory's listing digest (lock format 1's hash of it); None when not a directory."""
        path = self._abs(relative)
        return listing_digest(_walk(path)) if path.is_dir() else None

    def _hash_file(self, relative: str, path: Path, info: os.stat_result) -> str:
        cached = self.cache.get(relative)
        if cached and cached.get("size") == info.st_size and cached.get("mtime_ns") == info.st_mtime_ns:
            return cached["sha256"]
        sha = sha256_file(path)
        self.cache[relative] = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": sha}
        return sha

    def _hash_dir(self, relative: str, path: Path) -> str:
        files = _walk(path)
        listing = listing_digest(files)
        cached = self.cache.get(relative)
        if cached and cached.get("listing") == listing:
            return cached["sha256"]
        digest = hashlib.sha256()
        for name, _, _ in files:
            digest.update(f"{name}\0{sha256_file(path / name)}\n".encode())
        tree = TREE_PREFIX + digest.hexdigest()
        self.cache[relative] = {"listing": listing, "sha256": tree}
        return tree
