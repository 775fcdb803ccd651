"""Integration: a real slice of the Aozora corpus through tokenize (token store) and word2vec, and a
``jpipe run tokenize`` process killed after its first shard that resumes on the next run.

The slice is the first works of ``../shared/data/aozora/aozora_pd.txt.gz``, streamed (the file is
never read whole); KNBC is the tiny hand-made corpus, so each test takes seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.paths import EXTRA_TOKENS, WORD2VEC_DIR
from pipeline.text.token_store import TokenStore
from pipeline.vectors.store import WORDS_FILENAME
from pipeline.workflow.runner import LOCK_FILENAME, Runner
from tests.conftest import REPO

pytestmark = pytest.mark.integration

AOZORA = REPO.parent / "shared" / "data" / "aozora" / "aozora_pd.txt.gz"


def aozora_slice(directory: Path, lines: int) -> Path:
    """The first ``lines`` lines of the Aozora corpus as a .txt.gz (read as a stream)."""
    if not AOZORA.exists():
        pytest.skip(f"Aozora corpus not found at {AOZORA}")
    path = directory / f"aozora_{lines}.txt.gz"
    with gzip.open(AOZORA, "rb") as source, gzip.open(path, "wb") as out:
        for number, line in enumerate(source):
            if number == lines:
                break
            out.write(line)
    return path


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_aozora_slice_through_tokenize_and_word2vec(tiny_project, tmp_path):
    project, overrides = tiny_project
    corpus = aozora_slice(tmp_path, 3000)
    with gzip.open(corpus, "rt", encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    works = sum(1 for previous, line in zip(["", *lines], lines, strict=False) if line and not previous)
    settings = [
        *overrides,
        f'tokenize.extra_corpora=["{corpus}"]',
        "tokenize.shard_lines=1000",
        "word2vec.epochs=2",
        "word2vec.min_count=5",
    ]
    config = load_config(project, settings, profile="aozora")
    Runner(project, config).run("word2vec")

    store = TokenStore.open(project / EXTRA_TOKENS)
    assert store.sentences == sum(1 for line in lines if line) and store.meta["documents"] == works > 3
    assert store.fields == ["surface", "norm"] and len(store.meta["shards"]) == 3
    assert store.meta["sources"][0]["skipped_bad_utf8_lines"] == 0
    size = sum(len(data) for data in tree(project / EXTRA_TOKENS).values())
    assert size <= 3 * store.meta["text_bytes"]
    meta = json.loads((project / WORD2VEC_DIR / "meta.json").read_text(encoding="utf-8"))
    assert meta["training_tokens"] > store.tokens  # KNBC + Aozora
    assert any(name.endswith(EXTRA_TOKENS) for name in meta["corpus_files"]) and meta["params"]["epochs"] == 2
    counts = dict(zip(store.vocab("norm"), store.counts("norm").tolist(), strict=True))
    frequent = [word for word, count in counts.items() if count >= 20 and len(word) > 1][:50]
    vocabulary = set((project / WORD2VEC_DIR / WORDS_FILENAME).read_text(encoding="utf-8").splitlines())
    assert frequent and set(frequent) <= vocabulary  # Aozora's words have vectors
    assert meta["vocab_size"] > 1000  # the tiny KNBC alone has a few dozen words


def _first_shard(project: Path, timeout: float = 120.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted((project / ".jpipe" / "work" / "tokenize").glob("*/chunk-*.npz"))
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError("no shard appeared")


def test_killed_tokenize_run_resumes_and_matches_an_uninterrupted_run(tiny_project, tmp_path):
    project, overrides = tiny_project
    corpus = aozora_slice(tmp_path, 20000)
    base = [*overrides, "tokenize.shard_lines=1000", "tokenize.workers=1"]
    Runner(project, load_config(project, base)).run("tokenize")
    twin = tmp_path / "twin"
    shutil.copytree(project, twin)
    before = {"lock": (project / LOCK_FILENAME).read_bytes(), **tree(project / "data" / "tokens")}
    settings = [*base, f'tokenize.extra_corpora=["{corpus}"]']
    command = [sys.executable, "-m", "pipeline", "--dir", str(project), "run", "tokenize", *(a for s in settings for a in ("--set", s))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _first_shard(project)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    done = list((project / ".jpipe" / "work" / "tokenize").glob("*/chunk-*.npz"))
    assert 1 <= len(done) < 20, "the run was killed after its first shard"
    assert {"lock": (project / LOCK_FILENAME).read_bytes(), **tree(project / "data" / "tokens")} == before

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming, {len(done)} shard(s)" in rerun.stdout + rerun.stderr
    Runner(twin, load_config(twin, settings)).run("tokenize")  # the same run, never interrupted
    assert tree(project / EXTRA_TOKENS) == tree(twin / EXTRA_TOKENS)
    assert TokenStore.open(project / EXTRA_TOKENS).meta["shards"][-1]["first_line"] == 19001
    assert (project / LOCK_FILENAME).read_bytes() != before["lock"]
