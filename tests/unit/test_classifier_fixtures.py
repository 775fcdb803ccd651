"""Tiny hand-made projects for the classifier and classify tests (imported by the other test files).

The tokens file mimics ``data/tokens/knbc.jsonl``: each sentence has a theme word
and a sentiment word among neutral filler, so a model can learn both tasks in a
few epochs, and the split is by article as in the real corpus.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

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
    (tokens / "extra.jsonl").write_text("", encoding="utf-8")
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
]


def fast_overrides(task: str, *extra: str) -> list[str]:
    return [f"train_{task}.{setting}" for setting in [*FAST_SETTINGS, *extra]]


@pytest.fixture
def clf_project(tmp_path: Path) -> Path:
    return write_tiny_project(tmp_path / "proj")


def test_fixture_rows_cover_every_label_and_split():
    rows = make_rows()
    assert {r["theme"] for r in rows} == set(THEME_WORDS)
    assert {r["sentiment"] for r in rows} == set(SENTIMENT_WORDS)
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
