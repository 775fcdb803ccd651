"""Word vectors on hand-made fixtures: training, normalization, OOV, export/import, --pairs, evaluation."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.config import load_config
from pipeline.errors import ConfigError, InputError, ModelError
from pipeline.paths import SPACY_VECTORS_DIR, VECTORS_MAP, VECTORS_REPORT, WORD2VEC_DIR
from pipeline.workflow.runner import StageContext
from pipeline.workflow.stages import STAGES
from tests.conftest import png_size
from tests.fixtures.vectors import CLUSTERS, PARTNERS, SYNONYMS, write_cluster_project

REPO = Path(__file__).resolve().parents[2]
# Small and fast; window 1 (see the fixture) and no down-sampling: in a 32-word corpus every
# word counts as "frequent" and sample=1e-3 would drop most of the training pairs.
W2V_OVERRIDES = [
    "word2vec.sample=0",
    "word2vec.vector_size=16",
    "word2vec.window=1",
    "word2vec.min_count=1",
    "word2vec.epochs=15",
    "word2vec.negative=5",
    "word2vec.workers=1",
    "word2vec.seed=3",
]


def run_stage(project: Path, name: str, overrides: list[str]) -> dict:
    """Call a stage function directly (no upstream stages) and move its outputs into place, as the runner does."""
    stage = next(s for s in STAGES if s.name == name)
    config = load_config(project, overrides)
    staging = project / ".staging" / name
    ctx = StageContext(stage=stage, project_dir=project, config=config, staging_dir=staging, work_dir=project / ".work" / name)
    metrics = stage.load()(ctx)
    for output in stage.outputs:
        target = project / output
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging / output).rename(target)
    shutil.rmtree(project / ".staging", ignore_errors=True)
    return metrics


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    """The cluster fixture with a trained word2vec source (trained once for the module)."""
    project = write_cluster_project(tmp_path_factory.mktemp("vectors") / "proj")
    run_stage(project, "word2vec", W2V_OVERRIDES)
    return project


@pytest.fixture()
def project(tmp_path, trained_project) -> Path:
    copy = tmp_path / "proj"
    shutil.copytree(trained_project, copy)
    return copy


def hand_index(words: list[str], vectors):
    from pipeline.vectors.query import VectorIndex

    return VectorIndex(source="word2vec", words=words, vectors=np.asarray(vectors, dtype=np.float32), meta={"token_field": "norm"})


# ----------------------------------------------------------------- training
def test_word2vec_learns_the_fixture_neighbours(trained_project):
    from pipeline.vectors import Vectors

    engine = Vectors.from_project(project_dir=trained_project, source="word2vec")
    for word, partner in PARTNERS.items():
        neighbours = engine.most_similar(word, topn=3)
        assert neighbours[0][0] == partner, (word, neighbours)
    # the partner is closer than any target word of another cluster
    targets = [w for partners, *_ in CLUSTERS.values() for w in partners]
    for word, partner in PARTNERS.items():
        partner_score = engine.similarity(word, partner)
        others = [engine.similarity(word, t) for t in targets if t not in (word, partner)]
        assert partner_score > max(others)


def test_word2vec_source_dir_and_meta(trained_project):
    directory = trained_project / WORD2VEC_DIR
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    assert meta["source"] == "word2vec" and meta["token_field"] == "norm" and meta["split_mode"] == "C"
    assert meta["vocab_size"] == 32 and meta["dim"] == 16  # 8 targets + 4 x 6 contexts
    assert meta["training_seconds"] > 0
    assert meta["coverage"]["type_coverage"] == 1.0
    for name in ("vectors.kv", "vectors.kv.vectors.npy", "vectors.txt", "words.txt"):
        assert (directory / name).is_file()


def test_keyed_vectors_load_with_mmap(trained_project):
    from pipeline.vectors.store import load_keyed_vectors, load_vector_arrays

    keyed = load_keyed_vectors(trained_project / WORD2VEC_DIR, mmap="r")
    assert isinstance(keyed.vectors, np.memmap)
    words, vectors = load_vector_arrays(trained_project / WORD2VEC_DIR)
    assert words == list(keyed.index_to_key)
    np.testing.assert_array_equal(np.asarray(vectors), np.asarray(keyed.vectors))
    assert keyed.most_similar("犬", topn=1)[0][0] == "猫"


def test_word2vec_is_reproducible(tmp_path, trained_project):
    again = write_cluster_project(tmp_path / "again")
    run_stage(again, "word2vec", W2V_OVERRIDES)
    first = np.load(trained_project / WORD2VEC_DIR / "vectors.kv.vectors.npy")
    second = np.load(again / WORD2VEC_DIR / "vectors.kv.vectors.npy")
    np.testing.assert_array_equal(first, second)


def test_word2vec_token_field_is_configurable(tmp_path):
    project = write_cluster_project(tmp_path / "p")
    tokens = project / "data" / "tokens" / "knbc.jsonl"
    rows = [json.loads(line) for line in tokens.read_text(encoding="utf-8").splitlines()]
    with open(tokens, "w", encoding="utf-8") as handle:
        for row in rows:
            row["surface"] = [f"S{w}" for w in row["surface"]]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    run_stage(project, "word2vec", [*W2V_OVERRIDES, "word2vec.token_field=surface", "word2vec.epochs=1"])
    words = (project / WORD2VEC_DIR / "words.txt").read_text(encoding="utf-8").split()
    assert words and all(w.startswith("S") for w in words)


# ------------------------------------------------------------ normalization
def test_query_normalization_maps_natural_forms_to_keys():
    from pipeline.vectors.query import Vectors

    words = ["食べる", "美味しい", "携帯", "寺", "ラーメン", "行く"]
    engine = Vectors(hand_index(words, np.eye(len(words))))
    assert engine.resolve("食べた").keys == ["食べる"]  # inflection + auxiliary た dropped
    assert engine.resolve("おいしかった").keys == ["美味しい"]  # kana spelling -> normalized form
    assert engine.resolve("ケータイ").keys == ["携帯"]  # variant -> normalized form
    assert engine.resolve("お寺").keys == ["寺"]  # prefix dropped
    assert engine.resolve("行った").keys == ["行く"]
    typed = engine.resolve("携帯")
    assert typed.how == "key" and typed.keys == ["携帯"]
    averaged = engine.resolve("美味しいラーメン")
    assert averaged.how == "averaged" and averaged.keys == ["美味しい", "ラーメン"]


def test_multi_token_query_is_averaged_and_leaves_its_tokens_out():
    from pipeline.vectors.query import Vectors

    # 美味しい and ラーメン point two ways; 味噌 lies between them, 電話 elsewhere.
    words = ["美味しい", "ラーメン", "味噌", "電話"]
    vectors = [[1, 0, 0], [0, 1, 0], [0.7, 0.7, 0.1], [0, 0, 1]]
    result = Vectors(hand_index(words, vectors)).similar_json("美味しいラーメン", topn=3)
    assert result["keys"] == ["美味しい", "ラーメン"]
    assert [n["word"] for n in result["neighbours"]] == ["味噌", "電話"]
    assert result["neighbours"][0]["score"] == pytest.approx(
        float(np.dot([0.7, 0.7, 0.1], [1, 1, 0]) / np.linalg.norm([0.7, 0.7, 0.1]) / np.sqrt(2)), abs=1e-4
    )


def test_similarity_and_analogy_on_hand_vectors():
    from pipeline.vectors.query import Vectors

    # 京都 - 寺 + 神社 = 神宮 by construction
    words = ["京都", "寺", "神社", "神宮", "電話"]
    vectors = [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 1, 0], [0, 0, 0, 1]]
    engine = Vectors(hand_index(words, vectors))
    assert engine.analogy("京都", "寺", "神社", topn=1)[0][0] == "神宮"
    assert engine.analogy_json("京都", "寺", "神社", topn=1)["neighbours"][0]["word"] == "神宮"
    assert engine.similarity("寺", "神社") == 0.0
    assert engine.similarity("京都", "寺") == pytest.approx(np.sqrt(0.5), abs=1e-6)
    assert engine.similarity_json("京都", "寺")["score"] == round(float(np.sqrt(0.5)), 4)


# ---------------------------------------------------------------------- OOV
def test_out_of_vocabulary_is_a_clear_error():
    from pipeline.vectors.query import OutOfVocabulary, Vectors

    engine = Vectors(hand_index(["美味しい", "ラーメン"], np.eye(2)))
    with pytest.raises(OutOfVocabulary) as caught:
        engine.most_similar("ピクセル")
    assert isinstance(caught.value, InputError) and caught.value.code == "E208"
    assert "'ピクセル' is not in the word2vec vocabulary" in caught.value.message
    assert caught.value.hint.endswith("Try another form, or another vector source (word2vec, spacy, imported, ginza, combined).")
    with pytest.raises(InputError, match="E207: Empty query"):
        engine.most_similar("  ")
    with pytest.raises(OutOfVocabulary) as caught:
        engine.most_similar("美味しい寿司")  # one content token is OOV: the whole query is
    assert "寿司" in caught.value.message
    assert engine.pair_score("美味しい", "ピクセル") is None


def test_cli_similar_oov_exits_non_zero_with_message(project):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(project), "similar", "ピクセル"])
    assert result.exit_code == 1
    assert "Error E208: 'ピクセル' is not in the word2vec vocabulary" in result.output
    assert "Traceback" not in result.output


def test_cli_missing_source_names_the_command_to_build_it(project):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(project), "similar", "犬", "--vectors", "spacy"])
    assert result.exit_code == 1
    assert "jpipe run spacy_vectors" in result.output and "word2vec" in result.output
    result = CliRunner().invoke(app, ["--dir", str(project), "similar", "犬", "--vectors", "glove"])
    assert result.exit_code == 1 and "Valid sources: word2vec, spacy, imported, ginza, combined" in result.output


# ------------------------------------------------------- Vectors (public API)
def test_vectors_load_any_directory_from_any_working_directory(trained_project, tmp_path, monkeypatch):
    from pipeline.vectors import Vectors

    copy = tmp_path / "elsewhere" / "w2v"
    shutil.copytree(trained_project / WORD2VEC_DIR, copy)
    monkeypatch.chdir(tmp_path)
    vectors = Vectors.load(copy)
    assert (vectors.vocab_size, len(vectors), vectors.dim, vectors.split_mode) == (32, 32, 16, "C")
    assert "犬" in vectors and "ピクセル" not in vectors
    neighbours = vectors.most_similar("犬", topn=3)
    assert len(neighbours) == 3 and neighbours[0][0] == "猫" and isinstance(neighbours[0][1], float)
    assert [word for word, _ in vectors.most_similar("食べた", topn=1)] == ["飲む"]  # normalized like the corpus
    assert vectors.similarity("犬", "猫") == pytest.approx(neighbours[0][1], abs=1e-6)
    assert "犬" not in [word for word, _ in vectors.analogy("犬", "猫", "電話", topn=5)]
    same = Vectors.from_project(project_dir=trained_project, source="word2vec")
    assert same.most_similar("犬", topn=3) == neighbours


def test_vectors_split_mode_comes_from_meta_with_fallback(trained_project, tmp_path):
    from pipeline.vectors import Vectors

    old = tmp_path / "old"
    shutil.copytree(trained_project / WORD2VEC_DIR, old)
    meta = json.loads((old / "meta.json").read_text(encoding="utf-8"))
    meta["split_mode"] = "A"
    (old / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert Vectors.load(old).split_mode == "A"
    assert Vectors.load(old, split_mode="B").split_mode == "B"
    del meta["split_mode"]  # a directory written before split_mode was recorded
    (old / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    assert Vectors.load(old).split_mode == "C"


def test_vectors_load_errors_are_coded(tmp_path, project):
    from pipeline.vectors import Vectors

    with pytest.raises(ModelError, match="E305") as caught:
        Vectors.load(tmp_path / "nothing")
    assert "jpipe run word2vec" in caught.value.hint
    with pytest.raises(ModelError, match="E305: No spacy vectors"):
        Vectors.from_project(project_dir=project, source="spacy")
    with pytest.raises(ConfigError, match="E109: Unknown vector source 'glove'"):
        Vectors.from_project(project_dir=project, source="glove")


def test_vectors_load_imports_no_torch_and_sudachi_only_to_normalize(trained_project):
    code = (
        "import sys\n"
        "from pipeline.vectors import Vectors\n"
        f"vectors = Vectors.load({str(trained_project / WORD2VEC_DIR)!r})\n"
        "assert vectors.most_similar('犬', topn=1)[0][0] == '猫'\n"
        "assert 'sudachipy' not in sys.modules  # a key needs no tokenizer\n"
        "assert vectors.most_similar('食べた', topn=1)[0][0] == '飲む'\n"
        "assert 'sudachipy' in sys.modules\n"
        "heavy = [m for m in ('torch', 'spacy', 'gensim', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


def test_similar_benchmark_lives_in_bench(trained_project):
    from pipeline.bench.similar import benchmark_similar
    from pipeline.vectors import query

    assert not hasattr(query, "benchmark_similar")
    with pytest.raises(InputError, match="E208"):
        benchmark_similar(project_dir=trained_project, word="京都", cold_runs=1)
    result = benchmark_similar(project_dir=trained_project, word="犬", cold_runs=1, warm_queries=20)
    assert result["vocab_size"] == 32 and result["dim"] == 16 and len(result["cold"]["runs_s"]) == 1
    assert result["warm"]["key"]["queries"] == 20 and result["synthetic_20k"]["vocab_size"] == 20000
    assert 0 < result["warm"]["key"]["median_ms"] < 1000


# ------------------------------------------------------------------- CLI
def test_cli_similar_json_and_text(project):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(project), "similar", "犬", "--topn", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["keys"] == ["犬"] and data["vectors"] == "word2vec"
    assert len(data["neighbours"]) == 3 and data["neighbours"][0]["word"] == "猫"
    assert all(-1.0 <= n["score"] <= 1.0 for n in data["neighbours"])
    text = CliRunner().invoke(app, ["--dir", str(project), "similar", "食べた", "-n", "2"])
    assert text.exit_code == 0 and text.stdout.splitlines()[0].startswith("食べた -> 食べる")
    assert "飲む" in text.stdout.splitlines()[1]


def test_cli_similarity_and_analogy(project):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(project), "similarity", "犬", "猫", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["score"] > 0.5
    result = CliRunner().invoke(app, ["--dir", str(project), "similarity", "犬"])
    assert result.exit_code == 1 and "exactly two words" in result.output
    result = CliRunner().invoke(app, ["--dir", str(project), "analogy", "犬", "猫", "電話", "--json", "-n", "3"])
    assert result.exit_code == 0, result.output
    words = [n["word"] for n in json.loads(result.stdout)["neighbours"]]
    assert not {"犬", "猫", "電話"} & set(words)


def test_pairs_json_contract(project, tmp_path):
    from pipeline.cli import app

    text = "# comment\n犬\t猫\n食べた\t飲む\t0.9\n\n犬\tピクセル\nピクセル\tドット\n携帯 電話\n"
    for source_args, kwargs in ((["--pairs", "-"], {"input": text}), (["--pairs", str(tmp_path / "pairs.tsv")], {})):
        (tmp_path / "pairs.tsv").write_text(text, encoding="utf-8")
        result = CliRunner().invoke(app, ["--dir", str(project), "similarity", *source_args, "--json"], **kwargs)
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(r["w1"], r["w2"]) for r in lines] == [
            ("犬", "猫"),
            ("食べた", "飲む"),
            ("犬", "ピクセル"),
            ("ピクセル", "ドット"),
            ("携帯", "電話"),
        ]
        # A scored pair is {w1, w2, score}; a null score says why (code + reason) and the batch goes on.
        for row in lines:
            assert set(row) == ({"w1", "w2", "score"} if row["score"] is not None else {"w1", "w2", "score", "code", "reason"})
        assert lines[2]["code"] == "E208" and "ピクセル" in lines[2]["reason"]
        assert isinstance(lines[0]["score"], float) and lines[0]["score"] > 0.5
        assert isinstance(lines[1]["score"], float)  # 食べた normalized to 食べる
        assert lines[2]["score"] is None and lines[3]["score"] is None
        assert "3/5 pairs scored" in result.stderr


def test_pairs_rejects_malformed_lines_and_mixed_usage(project):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(project), "similarity", "--pairs", "-", "--json"], input="犬\t猫\n犬\n")
    assert result.exit_code == 1 and "line 2" in result.output
    result = CliRunner().invoke(app, ["--dir", str(project), "similarity", "犬", "猫", "--pairs", "-"], input="")
    assert result.exit_code == 1 and "either two words or --pairs" in result.output
    result = CliRunner().invoke(app, ["--dir", str(project), "similarity", "--pairs", "/nonexistent/pairs.tsv"])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_query_path_does_not_import_torch_spacy_or_gensim(trained_project):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli import app\n"
        f"result = CliRunner().invoke(app, ['--dir', {str(trained_project)!r}, 'similar', '食べた', '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "heavy = [m for m in ('torch', 'spacy', 'gensim', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


# ----------------------------------------------------------- export/import
def test_text_export_round_trips_through_the_numpy_reader(trained_project):
    from pipeline.models.vocab import read_word2vec_text
    from pipeline.vectors.store import load_vector_arrays

    words, vectors = load_vector_arrays(trained_project / WORD2VEC_DIR)
    text_words, text_vectors = read_word2vec_text(trained_project / WORD2VEC_DIR / "vectors.txt")
    assert text_words == words
    np.testing.assert_allclose(text_vectors, vectors, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["text", "text-gz", "binary", "kv", "model"])
def test_import_round_trip(project, tmp_path, kind):
    from gensim.models import KeyedVectors, Word2Vec

    from pipeline.vectors import Vectors
    from pipeline.vectors.store import load_keyed_vectors, load_vector_arrays

    source = load_keyed_vectors(project / WORD2VEC_DIR, mmap=None)
    path = tmp_path / f"external.{kind}"
    if kind == "text":
        source.save_word2vec_format(str(path), binary=False)
    elif kind == "text-gz":
        path = tmp_path / "external.txt.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write((project / WORD2VEC_DIR / "vectors.txt").read_text(encoding="utf-8"))
    elif kind == "binary":
        source.save_word2vec_format(str(path), binary=True)
    elif kind == "kv":
        source.save(str(path))
    else:  # a whole Word2Vec model: its .wv is imported
        model = Word2Vec(vector_size=source.vector_size, min_count=1)
        model.build_vocab([list(source.index_to_key)])
        model.wv.vectors[:] = source[model.wv.index_to_key]
        model.save(str(path))
    runner = CliRunner()
    from pipeline.cli import app

    result = runner.invoke(app, ["--dir", str(project), "vectors", "import", str(path), "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["source"] == "imported" and meta["vocab_size"] == len(source.index_to_key)
    assert meta["format"] == {"text-gz": "text", "model": "kv"}.get(kind, kind)
    assert meta["coverage"]["type_coverage"] == 1.0
    imported = project / "models" / "vectors" / "imported"
    words, vectors = load_vector_arrays(imported)
    assert set(words) == set(source.index_to_key)
    for word in ("犬", "食べる"):
        np.testing.assert_allclose(vectors[words.index(word)], source[word], rtol=1e-5, atol=1e-6)
    assert isinstance(KeyedVectors.load(str(imported / "vectors.kv"), mmap="r").vectors, np.memmap)
    assert not [p for p in imported.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert meta["split_mode"] == "C"
    assert Vectors.from_project(project_dir=project, source="imported").most_similar("犬", topn=1)[0][0] == "猫"


def test_import_limit_and_whitespace_keys(project, tmp_path):
    from pipeline.vectors.store import import_vectors, load_vector_arrays

    path = tmp_path / "small.vec"
    path.write_text("3 2\nA 1 0\nB 0 1\nC 1 1\n", encoding="utf-8")
    meta = import_vectors(project_dir=project, path=path, limit=2)
    assert meta["vocab_size"] == 2
    assert load_vector_arrays(project / "models" / "vectors" / "imported")[0] == ["A", "B"]


def test_import_failure_keeps_the_previous_source(project, tmp_path):
    from pipeline.vectors.store import import_vectors, read_meta

    good = tmp_path / "good.vec"
    good.write_text("2 2\nA 1 0\nB 0 1\n", encoding="utf-8")
    import_vectors(project_dir=project, path=good)
    imported = project / "models" / "vectors" / "imported"
    bad = tmp_path / "bad.vec"
    bad.write_text("not a header\n", encoding="utf-8")
    with pytest.raises(InputError, match="E207: .*not a word2vec-format"):
        import_vectors(project_dir=project, path=bad)
    broken = tmp_path / "broken.vec"
    broken.write_text("5 2\nA 1 x\n", encoding="utf-8")
    with pytest.raises(InputError, match="E207: Could not read") as caught:
        import_vectors(project_dir=project, path=broken, file_format="text")
    assert "--" not in caught.value.hint
    with pytest.raises(InputError, match="E205: .*does not exist"):
        import_vectors(project_dir=project, path=tmp_path / "missing.vec")
    assert read_meta(imported)["vocab_size"] == 2


def test_detect_format(tmp_path):
    from pipeline.vectors.store import detect_format

    text = tmp_path / "a.txt"
    text.write_text("1 3\n語 0.1 0.2 0.3\n", encoding="utf-8")
    assert detect_format(text) == "text"
    binary = tmp_path / "a.bin"
    binary.write_bytes(b"1 3\n\xe8\xaa\x9e " + np.asarray([0.1, 0.2, 0.3], dtype=np.float32).tobytes())
    assert detect_format(binary) == "binary"


# -------------------------------------------------------------- evaluation
def test_synonyms_path_resolution(tmp_path, monkeypatch):
    from pipeline.evaluation.vectors import resolve_synonyms_path

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "syn.txt").write_text("x", encoding="utf-8")
    assert resolve_synonyms_path("data/syn.txt", project_dir=project) == (project / "data" / "syn.txt").resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cwd.txt").write_text("x", encoding="utf-8")
    assert resolve_synonyms_path("cwd.txt", project_dir=project) == (tmp_path / "cwd.txt").resolve()
    with pytest.raises(InputError, match="E205") as caught:
        resolve_synonyms_path("../shared/none.txt.gz", project_dir=project)
    assert "synonyms_path" in caught.value.hint


def test_synonym_benchmark_parsing():
    from pipeline.evaluation.vectors import SynonymBenchmark, read_synonym_groups
    from pipeline.text.tokenize import load_tokenizer

    groups = read_synonym_groups(SYNONYMS)
    assert "ネコチャン" not in [w for entries in groups.values() for _, w in entries]  # misuse form left out
    benchmark = SynonymBenchmark.build(groups, tokenizer=load_tokenizer("C", with_pos=False), token_field="norm")
    # ケータイ normalizes to 携帯 (one key), 美味しいラーメン is two tokens (dropped)
    assert benchmark.pairs == sorted([("犬", "猫"), ("食べる", "飲む"), ("泳ぐ", "走る"), ("携帯", "電話")])
    assert benchmark.stats["multi_token_headwords_dropped"] == 1


def test_roc_auc_and_neighbour_precision_on_hand_vectors():
    from pipeline.evaluation.vectors import SynonymBenchmark, evaluate_synonyms

    words = ["a1", "a2", "b1", "b2", "c"]
    vectors = [[1, 0.1, 0], [1, 0, 0.1], [0, 1, 0.1], [0.1, 1, 0], [0, 0, 1]]
    index = hand_index(words, vectors)
    benchmark = SynonymBenchmark(
        groups=[frozenset({"a1", "a2"}), frozenset({"b1", "b2"})],
        synonyms={"a1": {"a2"}, "a2": {"a1"}, "b1": {"b2"}, "b2": {"b1"}},
        pairs=[("a1", "a2"), ("b1", "b2")],
    )
    result = evaluate_synonyms(index, benchmark, pairs=benchmark.pairs, pool=words, candidates=words, per_positive=3, seed=0)
    assert result["roc_auc"] == 1.0
    assert result["neighbour_precision"] == {"queries": 4, "r_precision": 1.0, "precision_at_1": 1.0, "hit_at_10": 1.0}


def test_evaluate_vectors_stage_on_fixtures(project):
    from pipeline.vectors.store import make_keyed_vectors, read_meta, write_vector_dir

    # A stand-in for the spacy source (the real one needs ja_ginza: see the integration test).
    words = (project / WORD2VEC_DIR / "words.txt").read_text(encoding="utf-8").split()
    rng = np.random.default_rng(0)
    write_vector_dir(
        project / SPACY_VECTORS_DIR,
        keyed_vectors=make_keyed_vectors(words[:-3], rng.standard_normal((len(words) - 3, 8))),
        meta={"source": "spacy", "token_field": "norm"},
    )
    overrides = [
        f"evaluate_vectors.synonyms_path={json.dumps(str(SYNONYMS))}",
        "evaluate_vectors.map_words=20",
        "evaluate_vectors.neighbour_words=['犬', '食べた', 'ピクセル']",
    ]
    metrics = run_stage(project, "evaluate_vectors", overrides)
    report = json.loads((project / VECTORS_REPORT).read_text(encoding="utf-8"))
    assert set(report["sources"]) == {"word2vec", "spacy"}
    w2v = report["sources"]["word2vec"]
    assert w2v["synonyms"]["pairs"] == 4 and w2v["synonyms"]["roc_auc"] > 0.5
    assert w2v["synonyms"]["neighbour_precision"]["precision_at_1"] == 1.0
    assert w2v["neighbours"]["犬"]["neighbours"][0]["word"] == "猫"
    assert w2v["neighbours"]["食べた"]["keys"] == ["食べる"]
    assert w2v["neighbours"]["ピクセル"]["oov"] is True
    assert report["common"]["vocab_size"] == len(words) - 3
    assert report["map"]["words"] == 20 and report["map"]["sources"] == ["word2vec", "spacy"]
    assert {t["theme"] for t in report["map"]["word_themes"]} <= {"Gourmet", "Keitai", "Kyoto", "Sports", "mixed"}
    assert png_size(project / VECTORS_MAP) == (1980, 990)  # two 9 x 9 inch panels at 110 dpi
    assert metrics["word2vec_roc_auc"] == w2v["synonyms"]["roc_auc"]
    assert read_meta(project / SPACY_VECTORS_DIR)["vocab_size"] == len(words) - 3
