"""Opinion records <-> decoder tokens (pipeline.data.opinions), on hand-written sentences."""

from __future__ import annotations

from pipeline.data.opinions import REC, SEP, find_span, gold_records, linearize, parse, segment, token_offsets

TEXT = "駅前のラーメン屋はスープが濃厚で美味しかった。"
TOKENS = ["駅前", "の", "ラーメン", "屋", "は", "スープ", "が", "濃厚", "で", "美味しかっ", "た", "。"]
RECORDS = [
    {"type": "批評＋", "expression": "濃厚で美味しかった", "target": "スープ"},
    {"type": "感情＋", "expression": "美味しかった", "target": "ラーメン屋"},
]


def test_linearize_shape():
    out = linearize(RECORDS, text=TEXT, tokens=TOKENS)
    assert out == [
        "批評＋",
        SEP,
        "濃厚",
        "で",
        "美味しかっ",
        "た",
        SEP,
        "スープ",
        REC,
        "感情＋",
        SEP,
        "美味しかっ",
        "た",
        SEP,
        "ラーメン",
        "屋",
    ]


def test_round_trip_records():
    back = parse(linearize(RECORDS, text=TEXT, tokens=TOKENS))
    assert [{k: r[k] for k in ("type", "expression", "target")} for r in back] == RECORDS
    assert [r["polarity"] for r in back] == ["+", "+"]


def test_round_trip_no_opinion_and_implicit_target():
    assert linearize([], text=TEXT, tokens=TOKENS) == []
    assert parse([]) == []
    records = gold_records(
        [{"evaluator": "[著者]", "expression": "美味しかった", "type": "批評−", "target": "[駅前の店]", "polarity": "-"}]
    )
    assert records[0]["target"] == "駅前の店"  # brackets of an implicit target removed
    back = parse(linearize(records, text=TEXT, tokens=TOKENS), text=TEXT)
    assert back[0]["target"] == "駅前の店" and back[0]["target_span"] is None
    assert back[0]["polarity"] == "-"


def test_spans_map_back_to_the_input():
    for record in parse(linearize(RECORDS, text=TEXT, tokens=TOKENS), text=TEXT):
        start, end = record["expression_span"]
        assert TEXT[start:end] == record["expression"]
        start, end = record["target_span"]
        assert TEXT[start:end] == record["target"]
    assert find_span(TEXT, "存在しない") is None and find_span(TEXT, "") is None


def test_token_offsets_and_segment():
    offsets = token_offsets(TEXT, TOKENS)
    assert all(TEXT[a:b] == token for (a, b), token in zip(offsets, TOKENS, strict=True))
    assert segment("ラーメン屋さん", {"ラーメン", "屋"}) == ["ラーメン", "屋", "さ", "ん"]


def test_parse_drops_malformed_and_repeated_records():
    tokens = ["批評＋", SEP, "美味しい", SEP, REC, "謎", SEP, "x", REC, SEP, REC, "批評＋", SEP, "美味しい", SEP, REC, "要望", SEP]
    back = parse(tokens)
    assert [(r["type"], r["expression"], r["target"], r["polarity"]) for r in back] == [("批評＋", "美味しい", "", "+")]
