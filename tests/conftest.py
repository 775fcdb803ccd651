"""Shared fixtures and helpers for tests/unit and tests/integration.

- the tiny hand-made KNBC archive (``tiny_archive``, ``tiny_project``);
- a tiny tokenized project for the classifiers (``write_tiny_project``, ``clf_project``, ``fast_overrides``);
- ``run_stage``: one stage function run as the runner runs it, without its upstream stages;
- the real KNBC archive and a real tokenized project (``knbc_archive``, ``real_project``);
- ``png_size``: a written figure is a whole PNG, and its pixel size.

Helpers that are not fixtures are imported by the test files: ``from tests.conftest import write_tiny_project``.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline.data.knbc.fetch import source_from_env
from pipeline.text.sharded import ShardSettings, finalize_store
from tests.fixtures.tiny_knbc import tiny_overrides, write_tiny_archive

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "KNBC_v1.0_090925_utf8.tar.bz2"


def real_archive_path(environ=None) -> Path:
    """$KNBC_SOURCE when it names something (empty counts as unset, see ``source_from_env``), else ../shared's archive."""
    return Path(source_from_env(environ) or SHARED_ARCHIVE)


REAL_ARCHIVE = real_archive_path()
SYNONYMS = REPO.parent / "shared" / "data" / "sudachi-synonyms" / "synonyms.txt.gz"


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    return write_tiny_archive(tmp_path_factory.mktemp("tiny_knbc"))


@pytest.fixture()
def tiny_project(tmp_path, tiny_archive) -> tuple[Path, list[str]]:
    """An empty project directory and the overrides that point it at the tiny corpus."""
    project = tmp_path / "project"
    project.mkdir()
    return project, [*tiny_overrides(), f"corpus.source={str(tiny_archive)!r}".replace("'", '"')]


@pytest.fixture(scope="session")
def knbc_archive() -> Path:
    if not REAL_ARCHIVE.exists():
        pytest.skip(f"real KNBC archive not found at {REAL_ARCHIVE}")
    return REAL_ARCHIVE


@pytest.fixture(scope="session")
def real_project(tmp_path_factory, knbc_archive) -> Path:
    """A project where corpus -> prepare -> tokenize ran on the real KNBC archive (once per session).

    Tests that run further stages must copy it first (shutil.copytree) so they do not interfere.
    """
    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner

    project = tmp_path_factory.mktemp("real_project")
    config = load_config(project, [f'corpus.source="{knbc_archive}"'])
    Runner(project, config).run("tokenize")
    return project


# ------------------------------------------------------------------ tiny classifier project
# The tokens file mimics ``data/tokens/knbc.jsonl``: each sentence has a theme word and a
# sentiment word among neutral filler, so a model can learn both tasks in a few epochs,
# and the split is by article as in the real corpus.
THEME_WORDS = {
    "Gourmet": ["ラーメン", "美味しい", "店", "料理", "味"],
    "Keitai": ["携帯", "電話", "メール", "画面", "機種"],
    "Kyoto": ["京都", "寺", "紅葉", "観光", "神社"],
    "Sports": ["野球", "試合", "選手", "サッカー", "優勝"],
}
SENTIMENT_WORDS = {"negative": ["最悪", "残念", "嫌い"], "neutral": ["今日", "行く", "ある"], "positive": ["最高", "好き", "嬉しい"]}
FILLER = ["は", "が", "の", "を", "に", "と", "た", "です", "ます", "。", "、", "て", "も"]


def make_rows(*, articles: int = 60, sentences_per_article: int = 6, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    themes = list(THEME_WORDS)
    sentiments = list(SENTIMENT_WORDS)
    for article in range(articles):
        theme = themes[article % 4]
        group = (article // 4) % 10  # four consecutive articles = one per theme, so every split has every theme
        split = "train" if group < 7 else ("dev" if group < 9 else "test")
        for position in range(sentences_per_article):
            sentiment = sentiments[rng.randrange(3)]
            words = [rng.choice(THEME_WORDS[theme]), rng.choice(SENTIMENT_WORDS[sentiment])]
            words += [rng.choice(FILLER) for _ in range(rng.randint(1, 10))]
            rng.shuffle(words)
            rows.append(
                {
                    "sentence_id": f"a{article}-{position}",
                    "article_id": f"a{article}",
                    "theme": theme,
                    "sentiment": sentiment,
                    "split": split,
                    "position": position,
                    "text": "".join(words),
                    "surface": words,
                    "lemma": words,
                    "norm": words,
                    "pos": ["NOUN"] * len(words),
                    "tag": ["名詞-普通名詞-一般"] * len(words),
                }
            )
    return rows


def write_tiny_project(directory: Path, *, vectors: bool = True, dim: int = 8) -> Path:
    """A project dir with data/tokens/knbc.jsonl (+ meta) and, optionally, a fake word2vec vectors.txt."""
    tokens = directory / "data" / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    rows = make_rows()
    with open(tokens / "knbc.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    finalize_store([], out_dir=tokens / "extra", sources=[], settings=ShardSettings())  # an empty token store
    (tokens / "meta.json").write_text(json.dumps({"split_mode": "C"}), encoding="utf-8")
    if vectors:
        words = sorted({w for row in rows for w in row["norm"]})
        rng = random.Random(1)
        vectors_dir = directory / "models" / "vectors" / "word2vec"
        vectors_dir.mkdir(parents=True, exist_ok=True)
        with open(vectors_dir / "vectors.txt", "w", encoding="utf-8") as handle:
            handle.write(f"{len(words)} {dim}\n")
            for word in words:
                handle.write(word + " " + " ".join(f"{rng.gauss(0, 0.3):.4f}" for _ in range(dim)) + "\n")
    return directory


def write_token_store(out_dir: Path, documents: list[list[list[str]]], *, shard_sentences: int = 40) -> Path:
    """A token store (``data/tokens/extra``) of hand-made documents (lists of sentences of words), as tokenize writes it.

    Every field (surface, norm) holds the same words; shards of ``shard_sentences`` sentences.
    """
    import numpy as np

    from pipeline.text.sharded import STAT_NAMES
    from pipeline.text.token_store import encode_strings, save_npz

    sentences = [(sentence, i == 0) for document in documents for i, sentence in enumerate(document)]
    work = out_dir.parent / f".{out_dir.name}-work"
    files = []
    for number, start in enumerate(range(0, len(sentences), shard_sentences)):
        chunk = sentences[start : start + shard_sentences]
        index: dict[str, int] = {}
        ids = [index.setdefault(word, len(index)) for sentence, _ in chunk for word in sentence]
        offsets = np.cumsum([0] + [len(sentence) for sentence, _ in chunk]).astype(np.int64)
        words_bytes, words_offsets = encode_strings(list(index))
        arrays = {"offsets": offsets, "new_doc": np.asarray([first for _, first in chunk], dtype=np.uint8)}
        arrays["stats"] = np.asarray([len(chunk), 0, 0, 0, 0][: len(STAT_NAMES)], dtype=np.int64)
        arrays["skipped_lines"] = np.zeros(0, dtype=np.int64)
        for field in ("surface", "norm"):
            arrays[field] = np.asarray(ids, dtype=np.uint32)
            arrays[f"{field}_bytes"], arrays[f"{field}_offsets"] = words_bytes, words_offsets
        files.append(work / f"{number:06d}.npz")
        save_npz(files[-1], arrays)
    finalize_store([files], out_dir=out_dir, sources=["fixture.txt"], settings=ShardSettings())
    shutil.rmtree(work)
    return out_dir


# Settings that keep fixture trainings to a second or two on CPU.
FAST_SETTINGS = [
    "embedding_init=word2vec",  # the fixture's fake vectors
    "freeze_embeddings=false",
    "word_dropout=0.0",
    "hidden_size=16",
    "attention_size=8",
    "batch_size=16",
    "epochs=6",
    "patience=6",
    "learning_rate=0.01",
    "seeds=1",  # one model, as before seeds existed; tests of several seeds ask for them
]


def fast_overrides(task: str, *extra: str) -> list[str]:
    """``tasks.<task>.classifier.<setting>`` overrides for a fast fixture training (``extra`` settings win)."""
    return [f"tasks.{task}.classifier.{setting}" for setting in [*FAST_SETTINGS, *extra]]


@pytest.fixture
def clf_project(tmp_path: Path) -> Path:
    return write_tiny_project(tmp_path / "proj")


# ------------------------------------------------------------------ one stage, as the runner runs it
# A tiny generator (16 units, 2 epochs) for tests that need one to exist, not to be good.
TINY_GENERATOR_SETTINGS = [
    "train_generator.embedding_size=16",
    "train_generator.hidden_size=16",
    "train_generator.num_layers=1",
    "train_generator.min_count=2",
    "train_generator.batch_size=16",
    "train_generator.device=cpu",
    "train_generator.epochs=2",
    "train_generator.seeds=1",
]

# Small, fast model settings for integration tests on the real corpus (one epoch, 32 units):
# they check plumbing and equivalences, not quality.
SMALL_CLASSIFIER_SETTINGS = [
    "embedding_init=random",
    "embedding_dim=32",
    "hidden_size=32",
    "attention_size=16",
    "epochs=1",
    "patience=1",
    "seeds=1",
]
SMALL_GENERATOR_SETTINGS = [
    "train_generator.embedding_init=random",
    "train_generator.embedding_size=32",
    "train_generator.hidden_size=32",
    "train_generator.epochs=1",
    "train_generator.device=cpu",
    "train_generator.seeds=1",
]


def run_stage(project: Path, name: str, overrides: Sequence[str] = (), *, resume: bool = False, tag: str | None = None) -> Any:
    """Run stage ``name``'s function directly (no upstream stages, no lock) and move its outputs into place.

    ``tag`` names the staging directory (default: the stage name), for tests that run a stage twice.
    Returns what the stage function returns (its summary metrics).
    """
    from pipeline.config import load_config
    from pipeline.workflow.stage import StageContext
    from pipeline.workflow.stages import build_stages

    config = load_config(project, list(overrides))
    stage = next(s for s in build_stages(config) if s.name == name)
    staging = project / ".jpipe" / "staging" / (tag or name)
    work = project / ".jpipe" / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(stage=stage, project_dir=project, config=config, staging_dir=staging, work_dir=work, resume=resume)
    metrics = stage.load()(ctx)
    for output in stage.outputs:
        target = project / output
        if target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging / output).replace(target)
    shutil.rmtree(staging, ignore_errors=True)
    return metrics


# ------------------------------------------------------------------ figures
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk with its CRC: the file was written to the end


# ------------------------------------------------------------------ several seeds
def model_weights(directory: Path) -> dict:
    """The tensors of a model directory's ``model.safetensors``."""
    from pipeline.models.model_dir import load_state_dict

    return load_state_dict(directory / "model.safetensors")


def assert_same_weights(a: Path, b: Path, *, exact: bool = True) -> None:
    """Two model directories hold the same tensors (bit for bit, or within float tolerance)."""
    import torch

    wa, wb = model_weights(a), model_weights(b)
    assert list(wa) == list(wb)
    for name in wa:
        if exact:
            assert torch.equal(wa[name], wb[name]), name
        else:
            torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=1e-4)


def interrupt_then_resume(run, monkeypatch, *, seed: int, epoch: int) -> None:
    """``run(resume)`` killed (KeyboardInterrupt) right after seed ``seed`` checkpointed epoch ``epoch``, then resumed."""
    import pipeline.training.loop as loop

    real_save = loop.save_checkpoint

    def crash(path, payload):
        real_save(path, payload)
        if Path(path).parent.name == str(seed) and payload["state"]["epoch"] == epoch:
            raise KeyboardInterrupt(f"simulated interruption in seed {seed}")

    monkeypatch.setattr(loop, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt, match=f"seed {seed}"):
        run(False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    run(True)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from the IHDR chunk, after checking the file is a whole PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert data.endswith(PNG_END), f"{path} is truncated (no IEND chunk)"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
