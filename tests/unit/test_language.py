"""The not-Japanese check: scripts counted per letter, kana decide, Chinese caught by characters and function words."""

from __future__ import annotations

import json

import pytest

from pipeline.text.language import check_language, script_of


@pytest.mark.parametrize(
    "text",
    [
        "駅前のラーメン屋はスープが美味しかった。",
        "windowsですか？",  # Latin words in a Japanese sentence
        "YouTubeとかみます？",
        "京都観光",  # short, kanji only
        "場所：京都市左京区百万遍",  # an address: 11 kanji, no kana, all JIS
        "是非是非！",  # 是 twice is one Chinese function character, not two
        "ｶﾀｶﾅだけﾃﾞｽ",  # half-width katakana
    ],
)
def test_japanese_passes(text):
    check = check_language(text)
    assert check.japanese and check.warning is None
    assert check.to_json() == {"language": "ja", "japanese_share": round(check.japanese_share, 3), "warning": None}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The staff were rude and the food was cold.", "kana or kanji among"),
        ("Очень вкусно, спасибо!", "kana or kanji among"),
        ("😀😀👍", "no letters"),
        ("12345 !!!", "no letters"),
        ("请输入密钥的尺寸", "not used in Japanese"),  # simplified characters outside JIS X 0208
        ("這是我們的餐廳", "Chinese function words"),  # traditional: 這, 是, 們, 的
        ("東西南北上下左右前後春夏秋冬一二", "no kana"),  # 16 kanji, no kana
    ],
)
def test_other_languages_get_a_warning(text, reason):
    check = check_language(text)
    assert not check.japanese and reason in check.warning
    assert check.to_json()["language"] == "other"


def test_scripts():
    assert [script_of(c) for c in "あア漢々a1。・😀"] == ["kana", "kana", "kanji", "kanji", "other", None, None, None, None]
    check = check_language("iPhoneの画面")
    assert (check.kana, check.kanji, check.other_letters) == (1, 2, 6)
    assert check.japanese  # one kana among 9 letters is over 10%


def test_bench_language_on_fixture_texts(tmp_path):
    from pipeline.bench.language import benchmark_language
    from pipeline.paths import SENTENCES

    sentences = tmp_path / SENTENCES
    sentences.parent.mkdir(parents=True)
    sentences.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in ["今日は晴れ。", "ｈｔｔｐ：／／ｗｗｗ．ｅｘ．ｃｏｍ／"]),
        encoding="utf-8",
    )
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir()
    (gnupg / "help.txt").write_text("# comment\n.gpg.key\nPlease answer yes or no.\n", encoding="utf-8")
    (gnupg / "help.ja.txt").write_text("はいかいいえで答えてください。\n", encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("こんにちは\n\nGood morning!\n", encoding="utf-8")
    result = benchmark_language(project_dir=tmp_path, corpus=corpus, other_dir=gnupg, sample=10)
    assert result["japanese"]["knbc"] == {"texts": 2, "flagged": 1, "flagged_share": 0.5}
    assert result["japanese"]["gnupg-ja"]["flagged"] == 0 and result["japanese"]["c.txt"]["flagged"] == 1
    assert result["other"] == {"en": {"texts": 1, "flagged": 1, "flagged_share": 1.0}}
    assert result["examples_flagged_japanese"] == ["ｈｔｔｐ：／／ｗｗｗ．ｅｘ．ｃｏｍ／"]
