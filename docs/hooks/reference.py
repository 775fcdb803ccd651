"""MkDocs hook: the reference pages (CLI, config, errors), generated from the code at build time.

A thin caller of :func:`pipeline.cli.reference.reference_pages` (unit-tested there): each page is added to
the site as a generated file, so it is never written to ``docs/`` and cannot drift from the code.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.reference")
REPO = Path(__file__).resolve().parents[2]


def on_files(files, config):
    if str(REPO) not in sys.path:  # `mkdocs build` run from elsewhere, or jpipe not installed in the environment
        sys.path.insert(0, str(REPO))
    from pipeline.cli.reference import reference_pages

    for path, content in reference_pages().items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=content))
        log.debug("generated %s (%d characters)", path, len(content))
    return files
