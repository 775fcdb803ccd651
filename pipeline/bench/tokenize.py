"""``jpipe bench tokenize``: sentences per second of full ja_ginza, its tokenizer, this pipeline's tokenizer and raw SudachiPy.

All of them use the same split mode and the KNBC sentences of the prepare stage, in one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import WorkflowError
from pipeline.io import read_jsonl
from pipeline.paths import SENTENCES
from pipeline.text.tokenize import Tokenizer


def _measure(function: Callable[[list[str]], Any], sample: list[str], *, split_mode: str) -> dict[str, Any]:
    function(sample[:20])  # warm-up: first calls pay for dictionary pages
    started = time.perf_counter()
    function(sample)
    seconds = time.perf_counter() - started
    return {
        "sentences_per_second": round(len(sample) / seconds, 1),
        "sentences": len(sample),
        "seconds": round(seconds, 3),
        "split_mode": split_mode,
    }


def _measure_ginza(texts: list[str], *, split_mode: str, full_limit: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(full ja_ginza pipeline on the first ``full_limit`` texts, ja_ginza's tokenizer alone on all of them)."""
    import spacy

    nlp = spacy.load("ja_ginza", config={"nlp": {"tokenizer": {"split_mode": split_mode}}})
    full = _measure(lambda sample: [None for _ in nlp.pipe(sample, batch_size=64)], texts[:full_limit], split_mode=split_mode)
    # ja_ginza's tokenizer alone (spaCy Doc objects, sub-token lists), for reference.
    tokenizer_only = _measure(lambda sample: [nlp.tokenizer(t) for t in sample], texts, split_mode=split_mode)
    return full, tokenizer_only


def _measure_sudachipy(texts: list[str], *, split_mode: str) -> dict[str, Any]:
    from sudachipy import Dictionary, SplitMode

    sudachi = Dictionary().create(mode=getattr(SplitMode, split_mode))

    def raw(sample: list[str]) -> None:
        for text in sample:
            for m in sudachi.tokenize(text):
                (m.surface(), m.dictionary_form(), m.normalized_form(), m.part_of_speech())

    return _measure(raw, texts, split_mode=split_mode)


def benchmark_tokenizers(*, project_dir: str | os.PathLike, split_mode: str = "C", full_limit: int = 400) -> dict[str, Any]:
    """Sentences/s of full ja_ginza, its tokenizer alone, this pipeline's tokenizer and raw SudachiPy.

    Full ja_ginza (parser + NER) is slow, so it runs on the first ``full_limit`` sentences.
    """
    path = Path(project_dir) / SENTENCES
    if not path.exists():
        raise WorkflowError("E404", f"{SENTENCES} not found in {project_dir}.", hint="Run `jpipe run prepare` first.")
    texts = [row["text"] for row in read_jsonl(path)]
    full, ginza_tokenizer = _measure_ginza(texts, split_mode=split_mode, full_limit=full_limit)
    tokenizer = Tokenizer(split_mode)
    pipeline = _measure(lambda sample: [tokenizer.tokenize(t) for t in sample], texts, split_mode=split_mode)
    sudachipy = _measure_sudachipy(texts, split_mode=split_mode)
    return {
        "full_ginza": full,
        "ginza_tokenizer_only": ginza_tokenizer,
        "pipeline": pipeline,
        "sudachipy": sudachipy,
        "pipeline_vs_sudachipy": round(pipeline["sentences_per_second"] / sudachipy["sentences_per_second"], 3),
    }
