"""The fast tokenizer path (issue 23): same tokens as before, byte for byte, on a fixture of varied sentences.

``tests/fixtures/tokenize_golden.jsonl`` holds real output of ``Tokenizer(mode).tokenize(text)`` made with the
code before the speed-up (its first line names the SudachiPy, SudachiDict and spaCy versions it was made with;
the golden test skips under other versions, the reference test below runs under any). The reference is the
straightforward implementation: a new ``MorphemeList`` per text, the tag built per token and spaCy's
``resolve_pos`` called per token.
"""

from __future__ import annotations

import json
import sys
import threading
from importlib.metadata import version
from pathlib import Path

import pytest

from pipeline.text.tokenize import Tokenizer, split_long_text

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "tokenize_golden.jsonl"


def _golden() -> tuple[dict, list[dict]]:
    header, *cases = (json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines())
    return header, cases


HEADER, CASES = _golden()
TEXTS = list(dict.fromkeys(case["text"] for case in CASES))


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    return {mode: Tokenizer(mode) for mode in "ABC"}


def reference_tokenize(text: str, split_mode: str) -> dict[str, list[str]]:
    """SudachiPy + spacy.lang.ja.resolve_pos, one token at a time, nothing kept between calls."""
    from spacy.lang.ja import resolve_pos
    from spacy.parts_of_speech import NAMES
    from sudachipy import Dictionary, SplitMode

    sudachi = Dictionary().create(mode=getattr(SplitMode, split_mode))
    tokens: dict[str, list[str]] = {"surface": [], "lemma": [], "norm": [], "pos": [], "tag": []}
    for piece in split_long_text(text):
        for morpheme in sudachi.tokenize(piece):
            surface = morpheme.surface()
            if surface and not surface.isspace():
                tokens["surface"].append(surface)
                tokens["lemma"].append(morpheme.dictionary_form() or surface)
                tokens["norm"].append(morpheme.normalized_form())
                tokens["tag"].append("-".join(part for part in morpheme.part_of_speech()[:4] if part != "*"))
    tags, next_pos = tokens["tag"], None
    for index, (surface, tag) in enumerate(zip(tokens["surface"], tags, strict=True)):
        if next_pos:
            tokens["pos"].append(NAMES[next_pos])
            next_pos = None
            continue
        current, next_pos = resolve_pos(surface, tag, tags[index + 1] if index + 1 < len(tags) else None)
        tokens["pos"].append(NAMES[current])
    return tokens


def test_fixture_covers_the_varied_cases():
    assert len(CASES) == 3 * len(TEXTS) and {case["split_mode"] for case in CASES} == {"A", "B", "C"}
    assert "" in TEXTS and "   " in TEXTS  # empty and whitespace-only lines give no tokens
    joined = "".join(TEXTS)
    for needle in ("３", "3.5", "三百", "ｱｲｳ", "😀", "、", "安全保障理事会", "\t"):
        assert needle in joined


def test_matches_the_golden_tokens_of_the_code_before(tokenizers):
    installed = {package: version(package) for package in HEADER["versions"]}
    if installed != HEADER["versions"]:
        pytest.skip(f"golden tokens made with {HEADER['versions']}, installed {installed}")
    for case in CASES:
        assert tokenizers[case["split_mode"]].tokenize(case["text"]) == case["tokens"], (case["split_mode"], case["text"])


@pytest.mark.parametrize("split_mode", ["A", "B", "C"])
def test_matches_the_straightforward_reference(tokenizers, split_mode):
    tokenizer = tokenizers[split_mode]
    for text in TEXTS:
        assert tokenizer.tokenize(text) == reference_tokenize(text, split_mode), text
    # the same texts again, in reverse: the reused MorphemeList and the per-POS tables hold nothing of the last text
    for text in reversed(TEXTS):
        assert tokenizer.tokenize(text) == reference_tokenize(text, split_mode), text


def test_without_pos_gives_the_same_other_fields(tokenizers):
    plain = Tokenizer("C", with_pos=False)
    for text in TEXTS:
        expected = {**tokenizers["C"].tokenize(text), "pos": []}
        assert plain.tokenize(text) == expected, text


def test_long_text_split_into_pieces_matches_the_reference(tokenizers):
    text = "３月に京都で😀ラーメンを食べた。" * 1200  # over CHUNK_MAX_BYTES: several pieces, one MorphemeList reused
    assert len(split_long_text(text)) > 1
    assert tokenizers["C"].tokenize(text) == reference_tokenize(text, "C")


def test_one_tokenizer_serves_several_threads_at_once(tokenizers):
    """Each thread has its own Sudachi tokenizer and MorphemeList: a shared one fails with "Already borrowed"
    (a Sudachi tokenizer running in two threads), or a thread reads morphemes that another thread wrote."""
    tokenizer = tokenizers["C"]
    texts = [t for t in TEXTS if t.strip()]
    expected = {text: tokenizer.tokenize(text) for text in texts}
    wrong: list[str] = []

    def work(offset: int) -> None:
        for round_ in range(200):
            text = texts[(round_ + offset) % len(texts)]
            try:
                if tokenizer.tokenize(text) != expected[text]:
                    wrong.append(text)
            except RuntimeError as exc:  # SudachiPy's "Already borrowed"
                wrong.append(f"{text}: {exc}")

    threads = [threading.Thread(target=work, args=(offset,)) for offset in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, also in the middle of a loop over morphemes
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []


def test_a_tag_outside_spacys_tag_map_falls_back_to_spacy():
    tokenizer = Tokenizer("C")
    unknown = "存在しない-品詞"
    kind = (unknown, *tokenizer._pos_rules(unknown))
    assert kind[1:] == (None, None, None) and tokenizer._unmapped_tags
    with pytest.raises(KeyError):  # what spacy.lang.ja.resolve_pos raises for it
        tokenizer._ud_pos(["x"], [kind], [unknown])


def test_split_long_text_boundary_of_the_character_count_shortcut():
    assert split_long_text("😀" * 4, max_bytes=16) == ["😀" * 4]  # 16 bytes: whole
    assert split_long_text("😀" * 5, max_bytes=16) == ["😀" * 4, "😀"]  # 20 bytes: split
    assert split_long_text("あ" * 5, max_bytes=16) == ["あ" * 5]  # 5 characters > 16 // 4, but 15 bytes: whole
    assert split_long_text("あ" * 6, max_bytes=16) == ["あ" * 5, "あ"]


def test_surfaces_and_norms_are_the_fields_of_tokenize(tokenizers):
    plain = Tokenizer("C", with_pos=False)
    for text in [*TEXTS, "３月に京都で😀ラーメンを食べた。" * 1200]:
        full = tokenizers["C"].tokenize(text)
        assert plain.surfaces_and_norms(text) == {"surface": full["surface"], "norm": full["norm"]}, text[:40]


def test_store_chunk_of_surface_and_norm_matches_the_full_path(tmp_path):
    import numpy as np

    from pipeline.text.sharded import STAT_NAMES, tokenize_chunk
    from pipeline.text.token_store import load_npz

    sentences = [t for t in TEXTS if t.strip()] + ["長い行。" * 3000]

    def shard(name: str, fields: list[str]) -> dict:
        job = {
            "path": str(tmp_path / f"{name}.npz"),
            "split_mode": "C",
            "fields": fields,
            "sentences": sentences,
            "new_doc": [True] * len(sentences),
            "skipped_lines": [],
            "stats": dict.fromkeys(STAT_NAMES, 0),
        }
        tokenize_chunk(job)
        return load_npz(job["path"])

    fast = shard("fast", ["surface", "norm"])  # surfaces_and_norms
    full = shard("full", ["surface", "norm", "lemma"])  # tokenize
    assert fast["stats"].tolist() == full["stats"].tolist() and fast["stats"][STAT_NAMES.index("split_long_lines")] == 1
    for name in ("offsets", "surface", "surface_bytes", "surface_offsets", "norm", "norm_bytes", "norm_offsets"):
        assert np.array_equal(fast[name], full[name]), name
