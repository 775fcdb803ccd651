"""The fast tokenizer: same fields as ja_ginza's tokenizer, long inputs, streaming extra corpora."""

import gzip
import json

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError, WorkflowError
from pipeline.paths import EXTRA_TOKENS, TOKENS, TOKENS_META
from pipeline.text.token_store import TokenStore
from pipeline.text.tokenize import SUDACHI_MAX_BYTES, Tokenizer, split_long_text
from pipeline.workflow.runner import Runner

SAMPLES = [
    "京都の寺で美味しいラーメンを食べた。",
    "ドコモの携帯電話は電池が　すぐ切れる  けど、画面は見やすい！",
    "昨日の試合は3対2で阪神が勝ったらしい（笑）",
    "ＡＢＣ　ａｂｃ １２３ 東京スカイツリー、行ってみたいなぁ〜",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def ginza():
    spacy = pytest.importorskip("spacy")
    return spacy.load("ja_ginza", exclude=["tok2vec", "parser", "ner", "morphologizer", "compound_splitter", "bunsetu_recognizer"])


@pytest.mark.parametrize("text", SAMPLES)
def test_fields_match_ja_ginza_tokenizer(ginza, text):
    doc = ginza.tokenizer(text)
    words = [t for t in doc if not t.is_space]
    expected = {
        "surface": [t.text for t in words],
        "lemma": [t.lemma_ for t in words],
        "norm": [t.norm_ for t in words],
        "pos": [t.pos_ for t in words],
        "tag": [t.tag_ for t in words],
    }
    assert Tokenizer("C").tokenize(text) == expected


def test_split_modes_differ():
    text = "東京スカイツリーの展望台"
    assert len(Tokenizer("A").tokenize(text)["surface"]) > len(Tokenizer("C").tokenize(text)["surface"])


def test_without_pos_skips_pos_only():
    with_pos = Tokenizer("C").tokenize(SAMPLES[0])
    without = Tokenizer("C", with_pos=False).tokenize(SAMPLES[0])
    assert without["pos"] == [] and without["norm"] == with_pos["norm"]


def test_split_long_text_keeps_text_and_respects_limit():
    text = ("これは長い文です。" * 3000) + ("あ" * 20000)
    pieces = split_long_text(text, max_bytes=10000)
    assert "".join(pieces) == text
    assert all(len(p.encode("utf-8")) <= 10000 for p in pieces)
    assert pieces[0].endswith("。")


def test_text_over_sudachi_limit_is_tokenized():
    sentence = "今日は京都で美味しいラーメンを食べました。"
    text = sentence * (SUDACHI_MAX_BYTES // len(sentence.encode("utf-8")) + 50)
    assert len(text.encode("utf-8")) > SUDACHI_MAX_BYTES
    tokens = Tokenizer("C").tokenize(text)
    assert len(tokens["surface"]) == len(Tokenizer("C").tokenize(sentence)["surface"]) * (text.count("。"))
    assert "".join(tokens["surface"]) == text


def test_stage_writes_aligned_fields_and_a_token_store_of_extra_corpora(tiny_project, tmp_path):
    project, overrides = tiny_project
    extra = tmp_path / "extra.txt.gz"
    with gzip.open(extra, "wt", encoding="utf-8") as handle:
        handle.write("京都に行った。\n\n携帯を買った。\n")
    config = load_config(project, [*overrides, f'tokenize.extra_corpora=["{extra}"]', "tokenize.store_fields=['lemma', 'norm']"])
    Runner(project, config).run("tokenize")
    rows = [json.loads(line) for line in (project / TOKENS).read_text(encoding="utf-8").splitlines()]
    assert rows and all(len({len(row[f]) for f in ("surface", "lemma", "norm", "pos", "tag")}) == 1 for row in rows)
    assert rows[0]["surface"] == ["ラーメン", "が", "美味しい", "。"] and rows[0]["theme"] == "Gourmet"
    assert {"sentence_id", "article_id", "split", "sentiment", "position"} <= set(rows[0])
    store = TokenStore.open(project / EXTRA_TOKENS)
    assert store.fields == ["lemma", "norm"]
    assert list(store.iter_sentences("lemma")) == [["京都", "に", "行く", "た", "。"], ["携帯", "を", "買う", "た", "。"]]
    assert [len(doc) for doc in store.iter_documents("lemma")] == [1, 1]  # the blank line ends a document
    meta = json.loads((project / TOKENS_META).read_text(encoding="utf-8"))
    assert meta["split_mode"] == "C" and meta["extra_sentences"] == 2
    assert not any((project / ".jpipe" / "work" / "tokenize").iterdir())  # work shards removed once the store is whole


def test_unknown_split_mode_is_a_coded_error():
    with pytest.raises(ConfigError, match="E109: Unknown Sudachi split mode 'D'") as info:
        Tokenizer("D")
    assert info.value.hint == "Valid split modes: A, B, C."


def test_tokenizer_benchmark_lives_in_bench_and_needs_prepare(tmp_path):
    from pipeline.bench.tokenize import benchmark_tokenizers
    from pipeline.text import tokenize

    assert not hasattr(tokenize, "benchmark_tokenizers")
    with pytest.raises(WorkflowError, match="E404") as info:
        benchmark_tokenizers(project_dir=tmp_path)
    assert "jpipe run prepare" in info.value.hint
