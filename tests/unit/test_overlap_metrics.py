"""Overlap F1, polarity and type accuracy of opinion records (``pipeline.metrics.overlap_scores``), on hand-built records."""

from __future__ import annotations

import pytest

from pipeline.metrics import opinion_scores, overlap_pairs, overlap_scores, record_polarity, span_overlap


def rec(kind: str, expression: str, span, target: str = "", target_span=None, polarity=None) -> dict:
    return {
        "type": kind,
        "expression": expression,
        "target": target,
        "expression_span": span,
        "target_span": target_span,
        "polarity": polarity,
    }


def test_overlap_of_exactly_half_the_union_matches():
    gold = rec("批評＋", "abcd", [0, 4])
    predicted = rec("批評＋", "ab", [0, 2])  # 2 shared of a 4-character union
    assert span_overlap(gold, predicted, "expression") == pytest.approx(0.5)
    assert overlap_pairs([gold], [predicted], "expression") == [(0, 0)]
    assert overlap_scores(gold=[[gold]], predicted=[[predicted]])["expression_overlap_f1"] == 1.0


def test_overlap_just_under_half_does_not_match():
    gold = rec("批評＋", "x" * 100, [0, 100])
    predicted = rec("批評＋", "x" * 49, [0, 49])  # 49 of 100
    assert span_overlap(gold, predicted, "expression") == pytest.approx(0.49)
    assert overlap_pairs([gold], [predicted], "expression") == []
    scores = overlap_scores(gold=[[gold]], predicted=[[predicted]])
    assert scores["expression_overlap_f1"] == 0.0
    assert scores["overlap_matched"] == 0


def test_one_to_one_keeps_the_larger_overlap_and_counts_the_other_prediction_as_wrong():
    gold = [rec("批評＋", "abcd", [0, 4])]
    predicted = [rec("批評−", "abc", [0, 3]), rec("批評＋", "abcd", [0, 4])]  # both overlap >= 50 %
    assert overlap_pairs(gold, predicted, "expression") == [(0, 1)]
    scores = overlap_scores(gold=[gold], predicted=[predicted])
    assert scores["expression_overlap_precision"] == 0.5
    assert scores["expression_overlap_recall"] == 1.0
    assert scores["type_accuracy_overlap"] == 1.0  # paired with the same-type prediction


def test_two_golds_one_prediction_pairs_once():
    gold = [rec("批評＋", "ab", [0, 2]), rec("批評＋", "cd", [2, 4])]
    predicted = [rec("批評＋", "abcd", [0, 4])]  # exactly 50 % with each gold
    assert len(overlap_pairs(gold, predicted, "expression")) == 1
    scores = overlap_scores(gold=[gold], predicted=[predicted])
    assert (scores["expression_overlap_precision"], scores["expression_overlap_recall"]) == (1.0, 0.5)


def test_values_without_span_match_only_when_equal():
    gold = rec("批評＋", "良い", [0, 2], target="プリペイド携帯", target_span=None)
    same = rec("批評＋", "良い", [0, 2], target="プリペイド携帯", target_span=None)
    other = rec("批評＋", "良い", [0, 2], target="携帯", target_span=None)
    assert overlap_scores(gold=[[gold]], predicted=[[same]])["target_overlap_f1"] == 1.0
    assert overlap_scores(gold=[[gold]], predicted=[[other]])["target_overlap_f1"] == 0.0


def test_empty_cases():
    empty = overlap_scores(gold=[[], []], predicted=[[], []])
    assert empty["expression_overlap_f1"] == 0.0 and empty["polarity_accuracy"] == 0.0 and empty["type_counts"] == {}
    missed = overlap_scores(gold=[[rec("要望", "欲しい", [0, 3])]], predicted=[[]])
    assert missed["expression_overlap_recall"] == 0.0
    assert missed["type_counts"] == {"要望": {"gold": 1, "predicted": 0, "matched": 0, "correct": 0}}
    spurious = overlap_scores(gold=[[]], predicted=[[rec("要望", "欲しい", [0, 3])]])
    assert spurious["expression_overlap_precision"] == 0.0
    assert spurious["type_counts"]["要望"]["predicted"] == 1


def test_polarity_and_type_accuracy_and_per_type_counts():
    gold = [rec("批評＋", "安い", [0, 2]), rec("当為", "べきだ", [5, 8]), rec("メリット−", "重い", [10, 12])]
    predicted = [rec("メリット＋", "安い", [0, 2]), rec("当為", "べきだ", [5, 8]), rec("批評＋", "重い", [10, 12])]
    scores = overlap_scores(gold=[gold], predicted=[predicted])
    assert scores["overlap_matched"] == 3
    assert scores["polarity_accuracy"] == pytest.approx(2 / 3)  # + = +, none = none, - != +
    assert scores["type_accuracy_overlap"] == pytest.approx(1 / 3)
    counts = scores["type_counts"]
    assert counts["批評＋"] == {"gold": 1, "predicted": 1, "matched": 1, "correct": 0}
    assert counts["当為"] == {"gold": 1, "predicted": 1, "matched": 1, "correct": 1}
    assert counts["メリット＋"] == {"gold": 0, "predicted": 1, "matched": 0, "correct": 0}


def test_record_polarity_from_field_or_type():
    assert record_polarity({"type": "批評−", "polarity": None}) == "-"
    assert record_polarity({"type": "要望"}) == "none"
    assert record_polarity({"type": "批評−", "polarity": "+"}) == "+"


def test_opinion_scores_include_the_overlap_scores_next_to_the_exact_ones():
    gold = [[rec("批評＋", "とても安い", [0, 5], target="値段", target_span=[6, 8])]]
    predicted = [[rec("批評＋", "安い", [3, 5], target="値段", target_span=[6, 8])]]  # 2 of 5: no overlap match
    scores = opinion_scores(gold=gold, predicted=predicted)
    assert scores["expression_f1"] == 0.0 and scores["expression_overlap_f1"] == 0.0
    assert scores["target_f1"] == 1.0 and scores["target_overlap_f1"] == 1.0
    predicted = [[rec("批評＋", "も安い", [2, 5], target="値段", target_span=[6, 8])]]  # 3 of 5
    assert opinion_scores(gold=gold, predicted=predicted)["expression_overlap_f1"] == 1.0


def test_extractor_table_shows_the_overlap_scores_and_the_per_type_counts():
    from pipeline.evaluation.extractor import comparisons, extractor_table, mean_std, score

    class Example:
        text, tokens = "料理がとても安い。", ["料理", "が", "とても", "安い", "。"]
        records = [{"type": "批評＋", "expression": "とても安い", "target": "料理", "polarity": "+"}]

    good = [{"type": "批評＋", "expression": "安い", "target": "料理", "polarity": "+"}]  # 2 of 5 characters
    better = [{"type": "批評−", "expression": "も安い", "target": "料理", "polarity": "-"}]  # 3 of 5
    runs = [{"seed": 1, **score([Example()], [good])}, {"seed": 2, **score([Example()], [better])}]
    assert [run["expression_overlap_f1"] for run in runs] == [0.0, 1.0]
    row = mean_std(runs)
    assert (row["expression_overlap_f1"], row["expression_overlap_f1_std"]) == (0.5, 0.5)
    assert row["target_overlap_f1"] == 1.0 and row["polarity_accuracy"] == 0.0
    assert row["type_counts"]["批評＋"] == {"gold": 1.0, "predicted": 0.5, "matched": 0.5, "correct": 0.0}
    report = {"seq2seq": row, "baseline_a": mean_std(runs[:1]), "beam": 5, "test_sentences": 1, "test_records": 1}
    report["comparisons"] = comparisons(report)
    table = extractor_table(report)
    assert "expr overlap F1" in table and "0.500 ± 0.500" in table
    assert "| 批評＋ | 1 | 0.5 · 0.5 · 0 | 1 · 0 · 0 |" in table
