"""corpus + prepare stages on the tiny hand-made corpus: fetch, safety, parsing, labels, splits."""

import io
import json
import tarfile
from collections import defaultdict

import pytest

from pipeline.config import load_config
from pipeline.data.knbc.prepare import parse_evaluations, parse_knp, sentence_sort_key, sentiment_label, split_articles
from pipeline.errors import InputError
from pipeline.paths import CORPUS_MANIFEST, CORPUS_STATS, SENTENCES
from pipeline.workflow.runner import LOCK_FILENAME, Runner
from tests.fixtures.tiny_knbc import ARTICLE_COUNT, SENTENCE_COUNT, tiny_overrides, write_tiny_knbc


def run(project, overrides, target="prepare"):
    return Runner(project, load_config(project, overrides)).run(target)


def read_rows(project):
    return [json.loads(line) for line in (project / SENTENCES).read_text(encoding="utf-8").splitlines()]


def test_archive_source_end_to_end(tiny_project):
    project, overrides = tiny_project
    assert run(project, overrides) == ["corpus", "prepare"]
    manifest = json.loads((project / CORPUS_MANIFEST).read_text(encoding="utf-8"))
    assert manifest["articles"] == ARTICLE_COUNT and manifest["sentences"] == SENTENCE_COUNT
    rows = read_rows(project)
    assert len(rows) == SENTENCE_COUNT
    first = rows[0]
    assert first["article_id"] == "KN900_Gourmet_1" and first["theme"] == "Gourmet" and first["position"] == 0
    assert first["text"] == "ラーメンが美味しい。"
    assert first["gold"]["surface"] == ["ラーメン", "が", "美味しい", "。"]
    assert first["gold"]["lemma"][2] == "美味しい" and first["gold"]["pos"][0] == "名詞"
    assert first["bunsetsu"][0] == {"start": 0, "head": 1, "dep": "D"}
    assert first["sentiment"] == "positive"
    assert first["evaluations"] == [
        {"evaluator": "[著者]", "expression": "美味しい", "type": "批評＋", "polarity": "+", "target": "ラーメン"}
    ]


def test_directory_source(tmp_path):
    root = write_tiny_knbc(tmp_path / "extracted")
    project = tmp_path / "project"
    project.mkdir()
    assert run(project, [*tiny_overrides(), f'corpus.source="{root.parent}"'], "corpus") == ["corpus"]


def test_count_mismatch_is_an_error_and_writes_nothing(tiny_project):
    project, overrides = tiny_project
    with pytest.raises(InputError, match="E204: .*expected 4186"):
        run(project, [o for o in overrides if "expected_sentences" not in o], "corpus")
    assert not (project / "data").exists() or not any((project / "data").rglob("*.json"))
    assert not (project / LOCK_FILENAME).exists()


def test_missing_file_says_how_to_pass_source(tmp_path):
    with pytest.raises(InputError) as info:
        run(tmp_path, [f'corpus.source="{tmp_path}/nope.tar.bz2"'], "corpus")
    assert info.value.code == "E201" and "does not exist" in info.value.message
    assert "corpus.source" in info.value.hint and "KNBC_SOURCE" in info.value.hint and "--" not in info.value.hint


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "KNBC.tar.bz2"
    bad.write_bytes(b"BZh91AY&SY this is not really bzip2 data")
    with pytest.raises(InputError, match="E203: .*corrupt") as info:
        run(tmp_path, [f'corpus.source="{bad}"'], "corpus")
    assert "corpus.source" in info.value.hint
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_no_network(tmp_path):
    # Port 9 (discard) on loopback: refused at once, like a machine without network.
    with pytest.raises(InputError, match="E202: Could not download") as info:
        run(tmp_path, ['corpus.source="http://127.0.0.1:9/KNBC_v1.0_090925_utf8.tar.bz2"'], "corpus")
    assert "corpus.source" in info.value.hint


@pytest.mark.parametrize("kind", ["traversal", "symlink"])
def test_unsafe_archive_is_rejected(tmp_path, kind):
    archive = tmp_path / "evil.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tar:
        if kind == "traversal":
            data = b"owned"
            info = tarfile.TarInfo("KNBC_v1.0_090925_utf8/../../escaped.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            info = tarfile.TarInfo("KNBC_v1.0_090925_utf8/corpus1")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc"
            tar.addfile(info)
    with pytest.raises(InputError, match="E203: .*unsafe"):
        run(tmp_path, [f'corpus.source="{archive}"'], "corpus")
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_parse_knp_units():
    text = (
        '# S-ID:KN1_Kyoto_1-1-2-01 KNP:x\n* 1D <a>\n+ 1D <b>\n京都 きょうと 京都 名詞 6 地名 4 * 0 * 0 "代表表記:京都/きょうと a b" <c>\n'
        "* -1D <d>\n+ -1D <e>\n行く いく 行く 動詞 2 * 0 子音動詞カ行促音便形 3 基本形 2 NIL <f>\nEOS\n"
    )
    parsed = parse_knp(text)
    assert parsed["sentence_id"] == "KN1_Kyoto_1-1-2-01"
    assert parsed["gold"]["surface"] == ["京都", "行く"]
    assert parsed["gold"]["conj_type"] == ["*", "子音動詞カ行促音便形"]
    assert parsed["bunsetsu"] == [{"start": 0, "head": 1, "dep": "D"}, {"start": 1, "head": -1, "dep": "D"}]


def test_evaluations_and_sentiment_rule():
    evaluations = parse_evaluations("[著者]\\n[著者]\\n[不定]", "a\\nb\\nc", "感情＋\\n批評−\\n当為", "x\\ny\\nz")
    assert [e["polarity"] for e in evaluations] == ["+", "-", None]
    assert sentiment_label(evaluations) == ("neutral", True)  # tie
    assert sentiment_label(evaluations[:1]) == ("positive", False)
    assert sentiment_label(evaluations[1:]) == ("negative", False)
    assert sentiment_label(evaluations[2:]) == ("neutral", False)
    assert sentiment_label([]) == ("neutral", False)
    assert parse_evaluations("", "", "", "") == []


def test_sentence_order_is_numeric():
    ids = ["A_Kyoto_1-1-10-01", "A_Kyoto_1-1-2-01", "A_Kyoto_1-1-2-02"]
    assert sorted(ids, key=sentence_sort_key) == ["A_Kyoto_1-1-2-01", "A_Kyoto_1-1-2-02", "A_Kyoto_1-1-10-01"]


def test_split_is_by_article_stratified_and_seeded():
    articles = {theme: [f"{theme}{i}" for i in range(10)] for theme in ("Gourmet", "Kyoto")}
    first = split_articles(articles, train_ratio=0.8, dev_ratio=0.1, seed=1)
    assert first == split_articles(articles, train_ratio=0.8, dev_ratio=0.1, seed=1)
    assert first != split_articles(articles, train_ratio=0.8, dev_ratio=0.1, seed=2)
    for theme in articles:
        counts = defaultdict(int)
        for article in articles[theme]:
            counts[first[article]] += 1
        assert dict(counts) == {"train": 8, "dev": 1, "test": 1}


def test_prepare_rows_never_share_an_article_across_splits(tiny_project):
    project, overrides = tiny_project
    run(project, [*overrides, "prepare.train_ratio=0.34", "prepare.dev_ratio=0.33", "prepare.test_ratio=0.33"])
    splits_of = defaultdict(set)
    for row in read_rows(project):
        splits_of[row["article_id"]].add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    stats = json.loads((project / CORPUS_STATS).read_text(encoding="utf-8"))
    assert {s for v in splits_of.values() for s in v} == {"train", "dev", "test"}
    assert sum(info["sentences"] for info in stats["splits"].values()) == SENTENCE_COUNT
    assert stats["mixed_polarity_sentences"] == 1


def test_theme_of_and_labels_errors():
    from pipeline.data.knbc.prepare import theme_of
    from pipeline.data.labels import theme_from_name

    assert theme_of("KN001_Keitai_1") == "Keitai"
    with pytest.raises(InputError, match="E207: Cannot tell the theme of article KN001_Cooking_1"):
        theme_of("KN001_Cooking_1")
    assert theme_from_name("グルメ") == theme_from_name("gourmet") == "Gourmet"
    with pytest.raises(ValueError, match="E220: Unknown theme 'Food'") as info:  # an InputError is a ValueError
        theme_from_name("Food")
    assert "Gourmet (グルメ)" in info.value.hint


def test_corpus_stats_missing_names_the_command(tmp_path):
    from pipeline.data.knbc.prepare import load_stats
    from pipeline.errors import WorkflowError

    with pytest.raises(WorkflowError, match="E404") as info:
        load_stats(tmp_path)
    assert info.value.hint == "Run `jpipe run prepare` first."
