"""``jpipe bench tokenize``: sentences per second of full ja_ginza, its tokenizer, this pipeline's tokenizer and raw SudachiPy.

All of them use the same split mode and the KNBC sentences of the prepare stage, in one process. Each result is
dropped once made, as the tokenize stage does (it writes a row and moves on) and as the raw SudachiPy loop does:
keeping thousands of results alive would add their memory to one side of the comparison only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import WorkflowError
from pipeline.io import read_jsonl, usable_cores
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


def _each(function: Callable[[str], Any]) -> Callable[[list[str]], None]:
    """``function`` on every text of a sample, each result dropped at once."""

    def run(sample: list[str]) -> None:
        for text in sample:
            function(text)

    return run


def _measure_ginza(texts: list[str], *, split_mode: str, full_limit: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(full ja_ginza pipeline on the first ``full_limit`` texts, ja_ginza's tokenizer alone on all of them)."""
    import spacy

    nlp = spacy.load("ja_ginza", config={"nlp": {"tokenizer": {"split_mode": split_mode}}})
    full = _measure(lambda sample: [None for _ in nlp.pipe(sample, batch_size=64)], texts[:full_limit], split_mode=split_mode)
    # ja_ginza's tokenizer alone (spaCy Doc objects, sub-token lists), for reference.
    tokenizer_only = _measure(_each(nlp.tokenizer), texts, split_mode=split_mode)
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
    pipeline = _measure(_each(tokenizer.tokenize), texts, split_mode=split_mode)
    sudachipy = _measure_sudachipy(texts, split_mode=split_mode)
    return {
        "full_ginza": full,
        "ginza_tokenizer_only": ginza_tokenizer,
        "pipeline": pipeline,
        "sudachipy": sudachipy,
        "pipeline_vs_sudachipy": round(pipeline["sentences_per_second"] / sudachipy["sentences_per_second"], 3),
    }


# ------------------------------------------------------------------ big corpora
def _corpus_sample(path: Path, lines: int, directory: Path) -> Path:
    """The first ``lines`` lines of ``path`` (streamed) as a plain file, or ``path`` itself when ``lines`` is 0."""
    if not lines:
        return path
    from pipeline.text.corpus import corpus_format, open_binary

    sample = directory / ("sample.jsonl" if corpus_format(path) == "jsonl" else "sample.txt")
    with open_binary(path) as source, open(sample, "wb") as out:
        for number, line in enumerate(source):
            if number >= lines:
                break
            out.write(line)
    return sample


def _run_once(source: Path, name: str, tmp: Path, *, settings, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One timed build of a token store with ``count`` workers: (figures, store meta)."""
    import resource
    import shutil

    from pipeline.text.sharded import build_store

    out, work = tmp / f"store-{count}", tmp / f"work-{count}"
    shards: list[dict] = []
    cpu_before = _cpu_seconds(resource)
    started = time.perf_counter()
    meta = build_store([(name, source)], out_dir=out, work_dir=work, settings=settings, workers=count, on_shard=shards.append)
    seconds = time.perf_counter() - started
    cpu = [round(after - before, 2) for after, before in zip(_cpu_seconds(resource), cpu_before, strict=True)]
    store_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    return {
        "workers": count,
        "seconds": round(seconds, 2),
        "sentences_per_second": round(meta["sentences"] / seconds, 1),
        "mb_per_second": round(meta["text_bytes"] / 1e6 / seconds, 3),
        "store_bytes": store_bytes,
        # CPU seconds of this process and of its (finished) worker processes: on a shared machine the
        # wall time depends on the load, the CPU time much less.
        "cpu_seconds_main": cpu[0],
        "cpu_seconds_workers": cpu[1],
        "processes": len({shard["pid"] for shard in shards}),
        "peak_rss_mb_per_process": max((shard["peak_rss_mb"] for shard in shards), default=0.0),
    }, meta


def benchmark_corpus(
    *,
    corpus: str | os.PathLike,
    workers: tuple[int, ...] = (1, 2),
    lines: int = 0,
    split_mode: str = "C",
    fields: tuple[str, ...] = ("surface", "norm"),
    shard_lines: int = 20000,
    rounds: int = 1,
) -> dict[str, Any]:
    """Sentences/s and MB/s (UTF-8 text) of tokenizing ``corpus`` into a token store, per worker count.

    Each run starts from an empty work directory (nothing resumed). ``lines`` > 0 takes the first lines only.
    With ``rounds`` > 1 the worker counts alternate (1, 2, 1, 2, ...) so that a load change on a shared machine
    hits each alike, and the fastest round of each is reported (``all_seconds`` lists every round).
    Also reports the store's size against the text's bytes, the CPU seconds, and the peak RSS of this process
    and of the largest worker process (as each worker reports it).
    """
    import resource
    import tempfile

    from pipeline.text.sharded import ShardSettings

    settings = ShardSettings(split_mode=split_mode, fields=tuple(fields), shard_lines=shard_lines)
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="jpipe-bench-") as tmp:
        source = _corpus_sample(Path(corpus), lines, Path(tmp))
        for _ in range(rounds):
            for count in workers:
                run, meta = _run_once(source, str(corpus), Path(tmp), settings=settings, count=count)
                best = runs.get(str(count))
                seconds = [*(best["all_seconds"] if best else []), run["seconds"]]
                runs[str(count)] = {**(run if best is None or run["seconds"] < best["seconds"] else best), "all_seconds": seconds}
    first = runs[str(workers[0])]
    return {
        "corpus": str(corpus),
        "lines": lines or None,
        "rounds": rounds,
        "sentences": meta["sentences"],
        "tokens": meta["tokens"],
        "text_mb": round(meta["text_bytes"] / 1e6, 2),
        "store_mb": round(first["store_bytes"] / 1e6, 2),
        "store_to_text": round(first["store_bytes"] / max(meta["text_bytes"], 1), 3),
        "fields": list(fields),
        "runs": runs,
        "speedup": {key: round(run["sentences_per_second"] / first["sentences_per_second"], 3) for key, run in runs.items()},
        "peak_rss_mb": {
            "main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "largest_worker": max((run["peak_rss_mb_per_process"] for run in runs.values() if run["workers"] > 1), default=None),
        },
        "cpus": usable_cores(),
    }


def _cpu_seconds(resource) -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime
