"""``jpipe bench language``: how the not-Japanese check (``pipeline.text.language``) does on real text.

Japanese: the project's KNBC sentences (every split) and, when given, lines of a corpus (e.g. the modern corpus).
Other languages: every ``help.<lang>.txt`` in a directory of GnuPG's help texts (``/usr/share/gnupg`` on Debian:
26 languages, Chinese in two scripts among them), the Japanese one counted with the Japanese texts.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path
from typing import Any

from pipeline.io import read_jsonl
from pipeline.paths import SENTENCES
from pipeline.text.language import check_language


def _corpus_lines(path: Path, *, sample: int, seed: int = 0) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    return random.Random(seed).sample(lines, min(sample, len(lines)))


def _gnupg_texts(directory: Path) -> dict[str, list[str]]:
    """language -> the message lines of ``help[.<lang>].txt`` (comments and ``.key`` lines left out)."""
    texts: dict[str, list[str]] = {}
    for path in sorted(directory.glob("help*.txt")):
        language = path.stem.split(".", 1)[1] if "." in path.stem else "en"
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        texts[language] = [line.strip() for line in lines if line.strip() and not line.startswith(("#", "."))]
    return texts


def _rate(texts: list[str]) -> dict[str, Any]:
    flagged = [text for text in texts if not check_language(text).japanese]
    return {"texts": len(texts), "flagged": len(flagged), "flagged_share": round(len(flagged) / max(1, len(texts)), 4)}


def benchmark_language(*, project_dir: Path, corpus: Path | None, other_dir: Path | None, sample: int) -> dict[str, Any]:
    """Share of texts flagged as not Japanese, per source: low is right for Japanese, high for the others."""
    japanese = {"knbc": [row["text"] for row in read_jsonl(project_dir / SENTENCES)]}
    if corpus:
        japanese[corpus.name] = _corpus_lines(corpus, sample=sample)
    other = _gnupg_texts(other_dir) if other_dir and other_dir.is_dir() else {}
    if "ja" in other:
        japanese["gnupg-ja"] = other.pop("ja")
    result: dict[str, Any] = {"japanese": {name: _rate(texts) for name, texts in japanese.items()}}
    result["other"] = {name: _rate(texts) for name, texts in other.items()}
    if other:
        all_other = [text for texts in other.values() for text in texts]
        result["other_flagged_share"] = _rate(all_other)["flagged_share"]
    result["examples_flagged_japanese"] = [t for t in japanese["knbc"] if not check_language(t).japanese][:5]
    return result
