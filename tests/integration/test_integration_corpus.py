"""Integration: corpus -> prepare -> tokenize on the real KNBC archive from ../shared."""

import json
from collections import Counter, defaultdict

import pytest

from pipeline.config import load_config
from pipeline.data.labels import SENTIMENTS, THEMES
from pipeline.paths import CORPUS_MANIFEST, CORPUS_STATS, SENTENCES, TOKENS
from pipeline.workflow.runner import Runner

pytestmark = pytest.mark.integration


def rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_counts(real_project, knbc_archive):
    manifest = json.loads((real_project / CORPUS_MANIFEST).read_text(encoding="utf-8"))
    assert manifest["source"] == str(knbc_archive)  # $KNBC_SOURCE (an archive or an extracted directory), else ../shared
    assert manifest["articles"] == 249 and manifest["sentences"] == 4186
    sentences = rows(real_project / SENTENCES)
    assert len(sentences) == 4186
    assert len({r["article_id"] for r in sentences}) == 249
    assert (real_project / "data/corpus/KNBC_v1.0_090925_utf8/README.txt").exists()  # the license travels with the data


def test_no_article_in_two_splits_and_all_labels_everywhere(real_project):
    sentences = rows(real_project / SENTENCES)
    splits_of = defaultdict(set)
    for r in sentences:
        splits_of[r["article_id"]].add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    stats = json.loads((real_project / CORPUS_STATS).read_text(encoding="utf-8"))
    for split, info in stats["splits"].items():
        assert set(info["theme"]) == set(THEMES), split
        assert set(info["sentiment"]) == set(SENTIMENTS), split
    train_share = stats["splits"]["train"]["articles"] / 249
    assert 0.75 < train_share < 0.85
    theme_counts = Counter(r["theme"] for r in sentences)
    assert set(theme_counts) == set(THEMES)
    assert 80 <= stats["mixed_polarity_sentences"] <= 120


def test_token_fields(real_project):
    tokens = rows(real_project / TOKENS)
    assert len(tokens) == 4186
    for row in tokens:
        lengths = {len(row[f]) for f in ("surface", "lemma", "norm", "pos", "tag")}
        assert len(lengths) == 1 and lengths.pop() > 0, row["sentence_id"]
        assert "".join(row["surface"]) == "".join(row["text"].split())
    pos = Counter(p for row in tokens for p in row["pos"])
    assert {"NOUN", "VERB", "ADP", "PUNCT"} <= set(pos)


def test_second_run_is_a_noop(real_project):
    # The source is not part of the fingerprint: pointing it elsewhere must not re-fetch.
    config = load_config(real_project, ['corpus.source="unused"'])
    runner = Runner(real_project, config)
    assert all(status.fresh for status in runner.status()[:3])
    assert runner.run("tokenize") == []
