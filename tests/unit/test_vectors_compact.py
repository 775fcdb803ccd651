"""Compact vector sources (keys sharing rows, as ja_ginza's table), combined sources, and the dev/test synonym evaluation.

Everything here runs on tiny hand-made tables; tests/integration/test_ginza_integration.py does the real table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.errors import InputError, ModelError
from pipeline.paths import GINZA_VECTORS_DIR

REPO = Path(__file__).resolve().parents[2]

# Row 0: 犬 (its own word) and 狗 share it; row 1: 猫; row 2: 電車, 列車 and 汽車; row 3: 美味しい; row 4: ラーメン.
KEYS = ["犬", "猫", "電車", "美味しい", "ラーメン", "狗", "列車", "汽車"]
KEY_ROWS = [0, 1, 2, 3, 4, 0, 2, 2]
ROWS = np.asarray(
    [[1.0, 0.1, 0.0, 0.0], [0.9, 0.3, 0.0, 0.0], [0.0, 0.0, 2.0, 0.1], [0.0, 0.1, 0.0, 1.0], [0.1, 0.0, 0.3, 0.9]], dtype=np.float32
)


def write_table(directory: Path, *, keys=KEYS, key_rows=KEY_ROWS, rows=ROWS, dtype: str = "float32") -> dict:
    from pipeline.vectors.store import write_compact_dir

    meta = {"source": "ginza", "token_field": "surface", "split_mode": "C"}
    return write_compact_dir(directory, keys=list(keys), key_rows=np.asarray(key_rows), rows=rows, meta=meta, dtype=dtype)


@pytest.fixture
def table_project(tmp_path) -> Path:
    project = tmp_path / "project"
    write_table(project / GINZA_VECTORS_DIR)
    return project


class FakeTokenizer:
    """Sudachi stand-in: text -> tokens given in ``table`` as (surface, norm, lemma, tag); counts its calls."""

    def __init__(self, table: dict[str, list[tuple[str, str, str, str]]]) -> None:
        self.table = table
        self.calls = 0

    def tokenize(self, text: str) -> dict[str, list[str]]:
        self.calls += 1
        tokens = self.table.get(text, [(text, text, text, "名詞-普通名詞")])
        return {name: [token[i] for token in tokens] for i, name in enumerate(("surface", "norm", "lemma", "tag"))}


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# ------------------------------------------------------------------ store
def test_compact_store_round_trip(table_project):
    from pipeline.vectors.store import CompactKeys, load_compact_arrays

    directory = table_project / GINZA_VECTORS_DIR
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    assert (meta["keys"], meta["rows"], meta["dim"], meta["layout"], meta["keys_per_row_max"]) == (8, 5, 4, "compact", 3)
    keys, rows = load_compact_arrays(directory)
    assert isinstance(rows, np.memmap) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)  # stored unit-normalized
    for key, row in zip(KEYS, KEY_ROWS, strict=True):
        assert keys[key] == row and key in keys
    assert "鳥" not in keys and keys.get("鳥") is None and "" not in keys
    assert sorted(keys) == sorted(KEYS) and len(keys) == len(KEYS)
    assert keys.keys_of_row(2) == ["電車", "列車", "汽車"]  # the row's own word first, then in the given order
    assert keys.row_words() == ["犬", "猫", "電車", "美味しい", "ラーメン"]
    (directory / "key_rows.npy").unlink()
    with pytest.raises(ModelError, match="E308"):
        CompactKeys(directory)


def test_compact_store_float16_and_unused_rows(tmp_path):
    from pipeline.vectors.query import VectorIndex

    extra = np.vstack([ROWS, [[5.0, 5.0, 5.0, 5.0]]])  # row 5: no key points to it, so it is dropped
    meta = write_table(tmp_path / "t", rows=extra, dtype="float16")
    assert meta["rows"] == 5 and meta["dtype"] == "float16"
    index = VectorIndex.load_dir(tmp_path / "t")
    assert index.vectors.dtype == np.float16 and index.key_count == 8 and len(index) == 5


# ------------------------------------------------------------------ queries
def test_neighbours_skip_the_query_row_and_show_each_row_once(table_project):
    from pipeline.vectors.query import Vectors

    vectors = Vectors.from_project(project_dir=table_project, source="ginza")
    result = vectors.similar_json("犬", topn=10)
    words = [n["word"] for n in result["neighbours"]]
    assert "狗" not in words and "犬" not in words  # same row as the query
    assert len(words) == 4 == len(set(words))  # 5 rows, minus the query's
    assert words[0] == "猫"
    train = next(n for n in result["neighbours"] if n["word"] == "電車")
    assert train["keys_on_row"] == 3 and train["aliases"] == ["列車", "汽車"]
    assert result["same_row_keys"] == {"count": 1, "examples": ["狗"]}
    expected = float(unit(ROWS[0]) @ unit(ROWS[1]))
    assert result["neighbours"][0]["score"] == pytest.approx(expected, abs=1e-4)


def test_similarity_of_keys_sharing_a_row_says_so(table_project):
    from pipeline.cli import app
    from pipeline.vectors.query import Vectors

    vectors = Vectors.from_project(project_dir=table_project, source="ginza")
    same = vectors.similarity_json("電車", "汽車")
    assert same["same_row"] is True and same["score"] == pytest.approx(1.0)
    other = vectors.similarity_json("犬", "猫")
    assert other["same_row"] is False and other["score"] < 1.0
    text = CliRunner().invoke(app, ["--dir", str(table_project), "similarity", "電車", "汽車"])
    assert text.exit_code == 0, text.output
    assert "same row" in text.stdout and "(ginza)" in text.stdout


def test_composed_query_is_the_mean_of_its_parts_and_marked(table_project):
    from pipeline.cli import app
    from pipeline.vectors.query import Vectors

    tokenizer = FakeTokenizer(
        {"美味しいラーメン": [("美味しい", "美味しい", "美味しい", "形容詞"), ("ラーメン", "ラーメン", "ラーメン", "名詞")]}
    )
    vectors = Vectors.from_project(project_dir=table_project, source="ginza")
    vectors._tokenizer = tokenizer
    result = vectors.similar_json("美味しいラーメン", topn=3)
    assert result["composed"] is True and result["keys"] == ["美味しい", "ラーメン"]
    query = unit(unit(ROWS[3]) + unit(ROWS[4]))
    best = max(range(3), key=lambda row: float(unit(ROWS[row]) @ query))
    assert result["neighbours"][0]["word"] == ["犬", "猫", "電車"][best]
    assert vectors.similar_json("猫")["composed"] is False
    # The CLI marks it in text (real Sudachi splits 美味しいラーメン into 美味しい + ラーメン).
    text = CliRunner().invoke(app, ["--dir", str(table_project), "similar", "美味しいラーメン", "--source", "ginza", "-n", "2"])
    assert text.exit_code == 0, text.output
    assert "(composed)" in text.stdout.splitlines()[0]
    data = json.loads(CliRunner().invoke(app, ["--dir", str(table_project), "similar", "美味しいラーメン", "--json"]).stdout)
    assert data["composed"] is True and data["vectors"] == "ginza"  # auto picks ginza when the project has it


def test_normalization_order_surface_then_norm_then_lemma(tmp_path):
    from pipeline.vectors.query import VectorIndex, Vectors

    token = [("走っ", "走る", "はしる", "動詞")]  # surface, normalized form, lemma all differ
    cases = [(["走っ", "走る", "はしる"], "走っ"), (["走る", "はしる"], "走る"), (["はしる"], "はしる")]
    for number, (keys, expected) in enumerate(cases):
        directory = tmp_path / f"t{number}"
        write_table(directory, keys=[*keys, "猫"], key_rows=[*range(len(keys)), len(keys)], rows=ROWS[: len(keys) + 1])
        tokenizer = FakeTokenizer({"走った": token})
        vectors = Vectors(VectorIndex.load_dir(directory), tokenizer=tokenizer)
        assert vectors.resolve("走った").keys == [expected]
        assert vectors.resolve("猫").how == "key" and tokenizer.calls == 1  # an exact key needs no tokenizer


def test_oov_rows_are_null_with_a_reason_and_the_batch_goes_on(table_project):
    from pipeline.cli import app
    from pipeline.vectors.query import Vectors

    vectors = Vectors.from_project(project_dir=table_project, source="ginza")
    vectors._tokenizer = FakeTokenizer({})
    row = vectors.pair_json("犬", "鳥")
    assert row["score"] is None and row["code"] == "E208" and "鳥" in row["reason"]
    text = "犬\t猫\n犬\tピクセル\n電車\t列車\n"
    result = CliRunner().invoke(app, ["--dir", str(table_project), "similarity", "--pairs", "-", "--json"], input=text)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["score"] is None for r in rows] == [False, True, False]
    assert rows[1]["code"] == "E208" and "ピクセル" in rows[1]["reason"]
    assert rows[2]["same_row"] is True and rows[2]["score"] == 1.0
    assert "2/3 pairs scored with ginza" in result.stderr


def test_auto_source_falls_back_to_word2vec(tmp_path, table_project):
    from pipeline.vectors.store import resolve_source

    assert resolve_source(table_project, "auto") == "ginza"
    assert resolve_source(tmp_path / "empty", "auto") == "word2vec"
    assert resolve_source(table_project, "spacy") == "spacy"


def test_query_path_imports_no_torch_spacy_gensim_nor_sudachi_for_keys(table_project):
    code = (
        "import sys\n"
        "from pipeline.vectors import Vectors\n"
        f"vectors = Vectors.from_project(project_dir={str(table_project)!r}, source='ginza')\n"
        "assert vectors.most_similar('犬', topn=1)[0][0] == '猫'\n"
        "assert vectors.similarity_json('電車', '列車')['same_row']\n"
        "heavy = [m for m in ('torch', 'spacy', 'gensim', 'sudachipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


# ------------------------------------------------------------------ import
def test_import_compact_layout_shares_identical_rows(tmp_path):
    from pipeline.vectors.query import Vectors
    from pipeline.vectors.store import import_vectors

    project = tmp_path / "p"
    path = tmp_path / "t.vec"
    path.write_text("4 2\nA 1 0\nB 0 1\nC 1 0\nD 1 1\n", encoding="utf-8")
    meta = import_vectors(project_dir=project, path=path, layout="compact")
    assert (meta["layout"], meta["keys"], meta["rows"]) == ("compact", 4, 3)
    vectors = Vectors.from_project(project_dir=project, source="imported")
    assert vectors.similarity_json("A", "C")["same_row"] is True
    assert [word for word, _ in vectors.most_similar("A", topn=3)] == ["D", "B"]


def test_bad_vector_files_get_coded_errors_naming_the_file(tmp_path):
    from pipeline.vectors.store import import_vectors

    empty = tmp_path / "empty.vec"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="E272") as caught:
        import_vectors(project_dir=tmp_path, path=empty)
    assert str(empty) in caught.value.message
    latin = tmp_path / "latin1.vec"
    latin.write_bytes("1 2\ncafé 1 0\n".encode("latin-1"))
    with pytest.raises(InputError, match="E271") as caught:
        import_vectors(project_dir=tmp_path, path=latin, file_format="text")
    assert str(latin) in caught.value.message


# ------------------------------------------------------------------ combined
def test_combined_is_the_concatenation_over_the_union_of_keys(tmp_path):
    from pipeline.vectors.combine import combine_indexes
    from pipeline.vectors.query import VectorIndex

    write_table(tmp_path / "g")
    ginza = VectorIndex.load_dir(tmp_path / "g")
    other_rows = np.asarray([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    small = VectorIndex(source="word2vec", words=["犬", "猫", "鳥"], vectors=other_rows)
    keys, key_rows, rows = combine_indexes([ginza, small])
    assert sorted(keys) == sorted({*KEYS, "鳥"}) and rows.shape[1] == 6
    lookup = dict(zip(keys, key_rows.tolist(), strict=True))
    assert lookup["列車"] == lookup["汽車"]  # same row in every part: still one row
    assert lookup["犬"] != lookup["狗"]  # word2vec knows 犬 but not 狗: they differ now

    def cosine(a, b):
        va, vb = unit(rows[lookup[a]]), unit(rows[lookup[b]])
        return float(va @ vb)

    mean_of_parts = (float(unit(ROWS[0]) @ unit(ROWS[1])) + float(other_rows[0] @ other_rows[1])) / 2
    assert cosine("犬", "猫") == pytest.approx(mean_of_parts, abs=1e-5)
    assert cosine("鳥", "電車") == pytest.approx(0.0, abs=1e-6)  # no source has both


# ------------------------------------------------------------------ dev/test evaluation
def test_dev_test_split_is_fixed_and_balanced():
    from pipeline.evaluation.synonym_splits import split_groups, split_of

    ids = [f"{number:06d}" for number in range(1, 4001)]
    first = {group_id: split_of(group_id) for group_id in ids}
    assert first == {group_id: split_of(group_id) for group_id in reversed(ids)}  # no state, no order
    share = sum(split == "dev" for split in first.values()) / len(ids)
    assert 0.45 < share < 0.55
    raw = {group_id: [("1", f"w{group_id}a"), ("2", f"w{group_id}b")] for group_id in ids[:200]}
    halves = split_groups(raw)
    reversed_halves = split_groups(dict(reversed(list(raw.items()))))
    assert {k: set(v) for k, v in halves.items()} == {k: set(v) for k, v in reversed_halves.items()}
    assert all(first[group_id] == name for name, groups in halves.items() for group_id in groups)


def test_coverage_counts_keys_and_composed_apart():
    from pipeline.evaluation.synonym_splits import coverage_counts
    from pipeline.vectors.query import ResolvedQuery

    def key(word, as_key=None):
        as_key = as_key or word
        return ResolvedQuery(text=word, keys=[as_key], rows=[0], how="key")

    resolved = {
        "曖昧": key("曖昧"),
        "あいまい": key("あいまい", "曖昧"),  # normalized onto the same key
        "不明確": key("不明確"),
        "犬": key("犬"),
        "猫": key("猫"),
        "飼い猫": ResolvedQuery(text="飼い猫", keys=["飼い", "猫"], rows=[1, 2], how="averaged"),
        "鳥": None,
    }
    groups = {
        "1": ["曖昧", "あいまい", "不明確"],  # covered: two distinct keys
        "2": ["曖昧", "あいまい"],  # two words found, one key: not covered
        "3": ["犬", "飼い猫"],  # one key + one composed word: covered only with composed
        "4": ["犬", "鳥"],  # one key, one OOV
    }
    figures, pair_groups = coverage_counts(groups, resolved)
    assert (figures["groups"], figures["groups_covered"], figures["coverage"]) == (4, 1, 0.25)
    assert figures["groups_with_2_words_found"] == 2 and figures["groups_covered_with_composed"] == 2
    assert figures["words_composed"] == 1 and figures["words_found_as_keys"] == 7
    assert pair_groups == [{"曖昧", "不明確"}]


def test_choice_is_made_on_dev_with_a_coverage_tie():
    from pipeline.evaluation.synonym_splits import choose_on_dev

    def figures(dev_coverage, dev_auc, test_coverage=0.1, test_auc=0.5):
        return {"dev": {"coverage": dev_coverage, "roc_auc": dev_auc}, "test": {"coverage": test_coverage, "roc_auc": test_auc}}

    results = {"a": figures(0.40, 0.90), "b": figures(0.402, 0.88, 0.9, 0.99), "c": figures(0.9, 0.6)}
    choice = choose_on_dev(results)
    assert choice["source"] == "a"  # b covers 0.2 point more (a tie) at a lower AUC; c is under the AUC bar
    results["b"] = figures(0.43, 0.86)
    assert choose_on_dev(results)["source"] == "b"
    assert choose_on_dev({"c": figures(0.9, 0.6)})["source"] == "c"
    assert choose_on_dev({"a": figures(0.6, 0.9, 0.55, 0.86)})["meets_goals_on_test"] is True


def test_evaluate_source_splits_on_a_tiny_dictionary(table_project):
    from pipeline.evaluation.synonym_splits import evaluate_source_splits, split_of
    from pipeline.vectors.query import Vectors

    dev_id = next(f"{n:06d}" for n in range(100) if split_of(f"{n:06d}") == "dev")
    test_id = next(f"{n:06d}" for n in range(100) if split_of(f"{n:06d}") == "test")
    halves = {"dev": {dev_id: ["犬", "猫"], "x": ["電車", "列車"]}, "test": {test_id: ["美味しい", "ピクセル"]}}
    vectors = Vectors.from_project(project_dir=table_project, source="ginza")
    vectors._tokenizer = FakeTokenizer({})
    result = evaluate_source_splits(vectors, halves, per_positive=1, seed=0)
    assert result["dev"]["coverage"] == 1.0 and result["dev"]["pairs"] == 2
    assert result["dev"]["synonym_pairs_on_one_row"] == 1  # 電車 / 列車
    assert result["test"]["coverage"] == 0.0 and result["test"]["roc_auc"] is None


def test_bad_synonym_files_get_coded_errors_naming_the_file(tmp_path):
    import gzip

    from pipeline.evaluation.synonym_splits import check_groups
    from pipeline.evaluation.vectors import read_synonym_groups

    empty = tmp_path / "synonyms.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="E270") as caught:
        check_groups(read_synonym_groups(empty), path=empty)
    assert str(empty) in caught.value.message
    latin = tmp_path / "latin.txt.gz"
    with gzip.open(latin, "wb") as handle:
        handle.write("000001,1,0,1,0,0,0,(),café,,\n".encode("latin-1"))
    with pytest.raises(InputError, match="E271") as caught:
        read_synonym_groups(latin)
    assert str(latin) in caught.value.message


# ------------------------------------------------------------------ retrofitting (experiment)
def test_retrofitting_pulls_synonym_rows_together_and_leaves_others(table_project):
    from pipeline.evaluation.retrofit import retrofit_rows, synonym_edges
    from pipeline.vectors.query import VectorIndex

    index = VectorIndex.load_dir(table_project / GINZA_VECTORS_DIR)
    neighbours = synonym_edges(index, [{"犬", "狗", "電車"}])  # 犬 and 狗 share row 0: one edge 0 - 2
    assert neighbours[0] == [2] and neighbours[2] == [0] and neighbours[1] == []
    unit_rows = np.asarray(index.vectors, dtype=np.float32)
    moved = retrofit_rows(unit_rows, neighbours, alpha=1.0)
    assert float(moved[0] @ moved[2]) > float(unit_rows[0] @ unit_rows[2]) + 0.1
    np.testing.assert_allclose(moved[1], unit_rows[1], atol=1e-6)  # no synonym: untouched
    barely = retrofit_rows(unit_rows, neighbours, alpha=1000.0)
    np.testing.assert_allclose(barely, unit_rows, atol=2e-3)  # a heavy original weight keeps the rows


# ------------------------------------------------------------------ HTTP
def test_server_answers_from_a_compact_source(table_project):
    from fastapi.testclient import TestClient

    from pipeline.serve.app import create_app

    with TestClient(create_app(project_dir=table_project, load_in_background=False)) as client:
        similar = client.get("/v1/similar", params={"word": "犬", "source": "ginza", "topn": 2}).json()
        assert [n["word"] for n in similar["neighbours"]][0] == "猫" and "狗" not in [n["word"] for n in similar["neighbours"]]
        assert {n["keys_on_row"] for n in similar["neighbours"]} <= {1, 3}
        body = client.post("/v1/similarity", json={"pairs": [["電車", "列車"], ["犬", "猫"]], "source": "ginza"}).json()
        assert body["same_row"] == [True, False] and body["scores"][0] == 1.0
