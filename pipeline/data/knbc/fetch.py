"""Stage ``corpus``: get KNBC from a URL, a local archive or an extracted directory.

The archive is extracted with tarfile's ``data`` filter (no absolute paths, no
``..``, no links pointing outside the target, no device files), into the
runner's staging directory, so a failure leaves nothing half-written in
``data/``. The result is verified (249 articles, 4,186 sentences by default)
and described by ``data/corpus/manifest.json`` (a sha256 per file), which is
what downstream stages fingerprint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.io import sha256_file

logger = logging.getLogger(__name__)

CORPUS_ROOT_NAME = "KNBC_v1.0_090925_utf8"
_ARTICLE_DIR = re.compile(r"^KN\d{3}_[A-Za-z]+_\w+$")
# One KNP file per sentence, named by sentence id (article-paragraph-sentence-part). The official
# archive also has a stray error file ``KN024_Kyoto_1/2`` ("Cannot make mrph"), which is not a sentence.
SENTENCE_FILE = re.compile(r"^KN\d{3}_[A-Za-z]+_\w+-\d+-\d+-\d+$")
_HOW_TO_SOURCE = (
    "Point corpus.source (in jpipe.toml, or the KNBC_SOURCE environment variable) at a local copy of "
    "KNBC_v1.0_090925_utf8.tar.bz2 or an extracted directory, then `jpipe run corpus`."
)


SOURCE_ENV = "KNBC_SOURCE"


def source_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``$KNBC_SOURCE``, or None when it is unset, empty or blank.

    Why blank counts as unset: ``make`` exports a variable that is not set as an empty string, and
    ``Path("")`` is the current directory, so an empty value must never be read as a source.
    The CLI, the tests and the Makefile all go through this one rule.
    """
    value = (os.environ if environ is None else environ).get(SOURCE_ENV, "").strip()
    return value or None


def is_url(source: str) -> bool:
    return re.match(r"^(https?|ftp)://", source) is not None


def download(url: str, destination: Path, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination`` (via a ``.part`` file) with a progress bar."""
    from tqdm import tqdm

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {destination.name}", disable=None) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise InputError("E202", f"Could not download KNBC from {url} ({reason}). No network?", hint=_HOW_TO_SOURCE) from None
    os.replace(partial, destination)
    return destination


def _find_corpus_root(directory: Path) -> Path | None:
    """The directory holding corpus1/ and corpus2/: ``directory`` itself or one level below."""
    for candidate in (directory, *sorted(p for p in directory.iterdir() if p.is_dir())):
        if (candidate / "corpus1").is_dir() and (candidate / "corpus2").is_dir():
            return candidate
    return None


def safe_extract(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target`` safely; return the corpus root inside it."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(target, filter="data")
    except tarfile.FilterError as exc:
        raise InputError("E203", f"{archive} contains an unsafe entry and was not extracted: {exc}.", hint=_HOW_TO_SOURCE) from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(
            "E203", f"{archive} is not a readable KNBC archive ({exc}); it may be truncated or corrupt.", hint=_HOW_TO_SOURCE
        ) from None
    root = _find_corpus_root(target)
    if root is None:
        raise InputError("E204", f"{archive} does not contain KNBC (no corpus1/ and corpus2/ inside).", hint=_HOW_TO_SOURCE)
    return root


@contextlib.contextmanager
def _local_source(source: str, *, download_dir: Path) -> Iterator[Path]:
    if is_url(source):
        name = source.rstrip("/").rsplit("/", 1)[-1] or "knbc.tar.bz2"
        cached = download_dir / name
        yield cached if cached.exists() else download(source, cached)
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError("E201", f"KNBC source {path} does not exist.", hint=_HOW_TO_SOURCE)
    yield path


def count_corpus(root: Path) -> dict[str, int]:
    """Articles (corpus1 directories), sentences (KNP sentence files) and corpus2 rows."""
    corpus1 = root / "corpus1"
    articles = [d for d in corpus1.iterdir() if d.is_dir() and _ARTICLE_DIR.match(d.name)]
    sentences = sum(1 for d in articles for f in d.iterdir() if f.is_file() and SENTENCE_FILE.match(f.name))
    corpus2_rows = 0
    for tsv in sorted((root / "corpus2").glob("*.tsv")):
        with open(tsv, encoding="utf-8") as handle:
            corpus2_rows += sum(1 for line in handle if line.strip())
    return {"articles": len(articles), "sentences": sentences, "corpus2_rows": corpus2_rows}


def corpus_stage(ctx) -> dict[str, Any]:
    from pipeline.paths import CORPUS_DIR, CORPUS_MANIFEST

    source = ctx.section["source"]
    target = ctx.output(CORPUS_DIR)
    scratch = ctx.staging_dir / "_extract"
    with _local_source(source, download_dir=ctx.work_dir / "downloads") as local:
        if local.is_dir():
            root = _find_corpus_root(local)
            if root is None:
                raise InputError("E204", f"{local} is not an extracted KNBC directory (no corpus1/ and corpus2/).", hint=_HOW_TO_SOURCE)
            logger.info("copying KNBC from %s", root)
            shutil.copytree(root, target, symlinks=False)
        else:
            logger.info("extracting %s", local)
            root = safe_extract(local, scratch)
            os.replace(root, target)
            shutil.rmtree(scratch, ignore_errors=True)
    counts = count_corpus(target)
    expected = {
        "articles": ctx.section["expected_articles"],
        "sentences": ctx.section["expected_sentences"],
        "corpus2_rows": ctx.section["expected_sentences"],
    }
    wrong = [f"{key}: found {counts[key]}, expected {value}" for key, value in expected.items() if counts[key] != value]
    if wrong:
        raise InputError("E204", f"The KNBC copy from {source} is incomplete or not v1.0 ({'; '.join(wrong)}).", hint=_HOW_TO_SOURCE)
    files = {str(p.relative_to(target)): sha256_file(p) for p in sorted(target.rglob("*")) if p.is_file()}
    manifest = {"source": source, "root": CORPUS_ROOT_NAME, **counts, "license_file": "README.txt", "files": files}
    from pipeline.io import write_json

    write_json(ctx.output(CORPUS_MANIFEST), manifest, indent=1)
    logger.info("KNBC verified: %d articles, %d sentences", counts["articles"], counts["sentences"])
    return counts
