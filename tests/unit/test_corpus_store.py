"""Unlabelled corpora: readers (txt, gz, jsonl), bad input, the token store, parallel and resumable tokenization."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.text.corpus import check_corpus, iter_records
from pipeline.text.sharded import ShardSettings, build_store
from pipeline.text.token_store import TokenStore, decode_strings, encode_strings, load_npz, save_npz
from pipeline.text.tokenize import CHUNK_MAX_BYTES, Tokenizer

LINES = ["京都の寺で紅葉を見た。", "携帯の電池がすぐ切れる。", "", "ラーメンが美味しい店。", "阪神が勝った！", "", "", "今日は雨だ。"]


def write_txt(path: Path, lines: list[str]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def build(tmp_path: Path, sources: list[Path], *, name: str = "store", workers: int = 1, shard_lines: int = 3, **kwargs) -> TokenStore:
    settings = ShardSettings(shard_lines=shard_lines, fields=kwargs.pop("fields", ("surface", "norm")))
    build_store(
        [(str(p), p) for p in sources],
        out_dir=tmp_path / name,
        work_dir=tmp_path / f"{name}-work",
        settings=settings,
        workers=workers,
        **kwargs,
    )
    return TokenStore.open(tmp_path / name)


# ------------------------------------------------------------------ readers
@pytest.mark.parametrize("name", ["corpus.txt", "corpus.txt.gz"])
def test_text_corpus_lines_and_documents(tmp_path, name):
    records = list(iter_records(write_txt(tmp_path / name, LINES)))
    assert [r.line for r in records] == list(range(1, len(LINES) + 1))
    sentences = [(s, r.new_doc) for r in records for s in r.sentences]
    assert sentences == [(LINES[0], True), (LINES[1], False), (LINES[3], True), (LINES[4], False), (LINES[7], True)]


def test_jsonl_corpus_rows_are_documents_and_bad_rows_are_counted(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"text": "京都に行った。\n寺を見た。"}, {"other": 1}, "not an object", {"text": "雨だ。"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{broken\n", encoding="utf-8")
    records = list(iter_records(path))
    assert [r.sentences for r in records] == [["京都に行った。", "寺を見た。"], [], [], ["雨だ。"], []]
    assert [r.bad_row for r in records] == [False, True, True, False, True]
    store = build(tmp_path, [path])
    assert [len(doc) for doc in store.iter_documents("surface")] == [2, 1]
    assert store.meta["sources"][0]["skipped_bad_rows"] == 3


def test_jsonl_text_field_is_configurable(tmp_path):
    path = tmp_path / "reviews.jsonl"
    path.write_text(json.dumps({"body": "美味しい店だ。"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="E263") as info:
        check_corpus(path)
    assert str(path) in info.value.message and "tokenize.text_field" in info.value.hint
    settings = ShardSettings(text_field="body")
    build_store([("r", path)], out_dir=tmp_path / "s", work_dir=tmp_path / "w", settings=settings)
    assert list(TokenStore.open(tmp_path / "s").iter_sentences("surface")) == [["美味しい", "店", "だ", "。"]]


# ------------------------------------------------------------------ bad input
def test_missing_empty_and_non_utf8_corpora_are_coded_errors_naming_the_file(tmp_path):
    cases = {"E260": tmp_path / "nowhere.txt", "E261": tmp_path / "empty.txt", "E262": tmp_path / "sjis.txt"}
    cases["E261"].write_text("\n  \n", encoding="utf-8")
    cases["E262"].write_bytes("京都の寺で紅葉を見た。\n携帯の電池がすぐ切れる。\n".encode("shift_jis"))
    for code, path in cases.items():
        with pytest.raises(InputError, match=code) as info:
            build(tmp_path, [path])
        assert str(path) in info.value.message
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text("京都\n", encoding="utf-16")
    with pytest.raises(InputError, match="E262"):
        check_corpus(utf16)


def test_binary_corpus_is_a_coded_error_naming_the_file(tmp_path):
    """NUL bytes decode as UTF-8, so the decode check alone would tokenize a binary file as text."""
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00\x01\x02\x00" * 4096 + "京都\n".encode())
    with pytest.raises(InputError, match="E262") as info:
        check_corpus(path)
    assert str(path) in info.value.message and "binary" in info.value.message


def test_truncated_gzip_is_a_coded_error(tmp_path):
    path = write_txt(tmp_path / "c.txt.gz", LINES * 2000)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(InputError, match="E264") as info:
        build(tmp_path, [path], shard_lines=50000)
    assert str(path) in info.value.message


def test_bad_utf8_lines_are_skipped_counted_and_logged(tmp_path, caplog):
    path = tmp_path / "mixed.txt"
    good = [line.encode("utf-8") for line in LINES if line]
    path.write_bytes(b"\n".join([good[0], b"\xff\xfe\xfa broken", good[1], "café".encode("latin-1"), good[2]]) + b"\n")
    with caplog.at_level(logging.WARNING):
        store = build(tmp_path, [path])
    assert store.meta["sources"][0]["skipped_bad_utf8_lines"] == 2
    assert store.meta["sources"][0]["first_skipped_lines"] == [2, 4]
    assert store.sentences == 3
    assert "skipped 2 line(s) that are not valid UTF-8" in caplog.text and "mixed.txt" in caplog.text


def test_a_line_longer_than_sudachis_limit_is_split_not_dropped(tmp_path):
    sentence = "今日は京都で美味しいラーメンを食べました。"
    long_line = sentence * (3 * CHUNK_MAX_BYTES // len(sentence.encode("utf-8")))
    store = build(tmp_path, [write_txt(tmp_path / "long.txt", ["短い文。", long_line])])
    surfaces = list(store.iter_sentences("surface"))
    assert "".join(surfaces[1]) == long_line
    assert store.meta["sources"][0]["split_long_lines"] == 1


# ------------------------------------------------------------------ the store
def test_npz_helpers_are_deterministic_and_pickle_free(tmp_path):
    data, offsets = encode_strings(["京都", "", "a b", "🍜"])
    assert decode_strings(data, offsets) == ["京都", "", "a b", "🍜"]
    arrays = {"ids": np.arange(5, dtype=np.uint32), "bytes": data}
    save_npz(tmp_path / "a.npz", arrays)
    save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert np.array_equal(load_npz(tmp_path / "a.npz")["ids"], arrays["ids"])


def test_store_round_trip_matches_the_tokenizer(tmp_path):
    sources = [write_txt(tmp_path / "a.txt", LINES), write_txt(tmp_path / "b.txt.gz", LINES[:2])]
    store = build(tmp_path, sources, fields=("surface", "lemma", "norm"))
    tokenizer = Tokenizer("C", with_pos=False)
    texts = [line for line in LINES if line] + LINES[:2]
    for field in ("surface", "lemma", "norm"):
        assert list(store.iter_sentences(field)) == [tokenizer.tokenize(text)[field] for text in texts]
    counts = store.counts("norm")
    assert store.vocab("norm")[0] == "。" and list(counts) == sorted(counts, reverse=True)
    assert counts.sum() == store.tokens == sum(s["tokens"] for s in store.meta["sources"])
    assert [s["source"] for s in store.meta["shards"]] == [0, 0, 0, 1]  # 8 lines in shards of 3, then b
    assert store.meta["sources"][1]["documents"] == 1 and store.meta["documents"] == 4
    ids, offsets, new_doc = next(store.iter_shards("norm"))
    assert ids.dtype == np.uint32 and offsets[0] == 0 and new_doc.tolist() == [1, 0]
    with pytest.raises(KeyError, match="pos"):
        list(store.iter_sentences("pos"))


def test_reader_needs_numpy_only():
    code = "import sys, pipeline.text.token_store; print(sorted({'spacy', 'sudachipy', 'torch', 'gensim'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_one_and_two_workers_give_identical_stores(tmp_path):
    sources = [write_txt(tmp_path / "a.txt", LINES * 6)]
    build(tmp_path, sources, name="one", workers=1)
    build(tmp_path, sources, name="two", workers=2)
    assert tree(tmp_path / "one") == tree(tmp_path / "two") and len(tree(tmp_path / "one")) > 5


def test_an_interrupted_build_resumes_and_matches_an_uninterrupted_one(tmp_path, caplog):
    sources = [write_txt(tmp_path / "a.txt", LINES * 3), write_txt(tmp_path / "b.txt.gz", LINES)]
    build(tmp_path, sources, name="whole")
    done: list[str] = []

    def fail_after_three(result):
        done.append(result["path"])
        if len(done) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C after three shards

    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, sources, name="resumed", on_shard=fail_after_three)
    assert not (tmp_path / "resumed").exists()
    assert len(list((tmp_path / "resumed-work").rglob("chunk-*.npz"))) == 3
    again: list[str] = []
    with caplog.at_level(logging.INFO):
        build(tmp_path, sources, name="resumed", on_shard=lambda result: again.append(result["path"]))
    assert "resuming, 3 shard(s)" in caplog.text
    assert not set(again) & set(done) and len(again) == len(TokenStore.open(tmp_path / "whole").meta["shards"]) - 3
    assert tree(tmp_path / "resumed") == tree(tmp_path / "whole")
    assert not list((tmp_path / "resumed-work").rglob("chunk-*.npz"))  # work shards removed at the end


def test_changed_input_or_settings_do_not_reuse_work_shards(tmp_path):
    path = write_txt(tmp_path / "a.txt", LINES)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, [path], on_shard=_stop_at_first)
    stale = {p.parent.name for p in (tmp_path / "store-work").rglob("chunk-*.npz")}
    write_txt(path, ["もう一行。", *LINES])
    store = build(tmp_path, [path])
    assert "".join(next(store.iter_sentences("surface"))) == "もう一行。"
    assert not any((tmp_path / "store-work" / key).exists() for key in stale)


def _stop_at_first(result):
    raise KeyboardInterrupt


# ------------------------------------------------------------------ word2vec on the store
def test_word2vec_stream_over_the_store_is_restartable(tmp_path):
    from pipeline.vectors.word2vec import TokenStream

    build(tmp_path, [write_txt(tmp_path / "a.txt", ["京都　の寺。", "雨だ。"])])
    stream = TokenStream([], token_field="norm", stores=[tmp_path / "store"])
    first, second = list(stream), list(stream)  # restartable: gensim makes one pass per epoch
    assert first == second == [["京都", "の", "寺", "。"], ["雨", "だ", "。"]]


def test_auto_epochs_and_workers_follow_the_corpus_size():
    from pipeline.vectors.word2vec import auto_epochs, auto_workers

    assert auto_epochs(100_000) == auto_epochs(1_000_000) == 30  # KNBC trains as before
    sizes = [2_000_000, 10_000_000, 50_000_000, 10**10]
    epochs = [auto_epochs(n) for n in sizes]
    assert epochs == sorted(epochs, reverse=True) and epochs[0] < 30 and epochs[-1] == 5
    assert auto_workers(100_000) == 1 and auto_workers(10**8) >= 1


# ------------------------------------------------------------------ profiles
def test_aozora_profile_layers_under_jpipe_toml_and_set(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    config = load_config(tmp_path, profile="aozora")
    assert config["tokenize"]["extra_corpora"] == ["../shared/data/aozora/aozora_pd.txt.gz"] and config.profile == "aozora"
    (tmp_path / "jpipe.toml").write_text('profile = "aozora"\n[tokenize]\nstore_fields = ["norm"]\n', encoding="utf-8")
    config = load_config(tmp_path, ["tokenize.extra_corpora=['mine.txt']"])
    assert config.profile == "aozora" and config["tokenize"]["store_fields"] == ["norm"]  # jpipe.toml beats the profile
    assert config["tokenize"]["extra_corpora"] == ["mine.txt"]  # --set beats both
    assert config["word2vec"]["use_extra_corpora"] is True
    with pytest.raises(ConfigError, match="E140: Unknown config profile 'azora'. Did you mean 'aozora'"):
        load_config(tmp_path, profile="azora")


def test_profile_ships_inside_the_package():
    import pipeline.config.loader as loader

    assert (Path(loader.__file__).parent / "profiles" / "aozora.toml").is_file()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"config/profiles/*.toml"' in pyproject  # package data: a pip install has it too


# ------------------------------------------------------------------ the stage, through the runner
def test_an_interrupted_tokenize_keeps_outputs_and_lock_then_resumes(tiny_project, tmp_path, monkeypatch):
    from pipeline.config import load_config
    from pipeline.paths import EXTRA_TOKENS
    from pipeline.text import sharded
    from pipeline.workflow.runner import LOCK_FILENAME, Runner

    project, overrides = tiny_project
    first = write_txt(tmp_path / "first.txt", LINES)
    base = [*overrides, "tokenize.shard_lines=2", "tokenize.workers=1"]
    Runner(project, load_config(project, [*base, f'tokenize.extra_corpora=["{first}"]'])).run("tokenize")
    before = {"lock": (project / LOCK_FILENAME).read_bytes(), **tree(project / "data" / "tokens")}
    second = write_txt(tmp_path / "second.txt", LINES * 2)
    config = load_config(project, [*base, f'tokenize.extra_corpora=["{second}"]'])
    real, calls = sharded.tokenize_chunk, []

    def dies_on_the_third(job):
        calls.append(job["chunk"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(sharded, "tokenize_chunk", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        Runner(project, config).run("tokenize")
    assert {"lock": (project / LOCK_FILENAME).read_bytes(), **tree(project / "data" / "tokens")} == before
    resumed: list[int] = []
    monkeypatch.setattr(sharded, "tokenize_chunk", lambda job: resumed.append(job["chunk"]) or real(job))
    assert Runner(project, config).run("tokenize") == ["tokenize"]
    assert resumed == [2, 3, 4, 5, 6, 7]  # the two shards written before the interruption were kept
    store = TokenStore.open(project / EXTRA_TOKENS)
    assert store.sentences == 2 * len([line for line in LINES if line]) and len(store.meta["shards"]) == 8
    assert all(status.fresh for status in Runner(project, config).status() if status.name == "tokenize")


def test_the_stage_rejects_a_bad_corpus_before_any_work(tiny_project, tmp_path, monkeypatch):
    from pipeline.config import load_config
    from pipeline.errors import WorkflowError
    from pipeline.text import tokenize
    from pipeline.workflow.runner import Runner

    project, overrides = tiny_project
    Runner(project, load_config(project, overrides)).run("prepare")
    monkeypatch.setattr(tokenize, "_tokenize_knbc", lambda *a, **k: pytest.fail("KNBC tokenized before the corpus check"))
    sjis = tmp_path / "sjis.txt"
    sjis.write_bytes("京都の寺で紅葉を見た。\n".encode("shift_jis"))
    with pytest.raises(InputError, match="E262") as info:
        Runner(project, load_config(project, [*overrides, f'tokenize.extra_corpora=["{sjis}"]'])).run("tokenize")
    assert str(sjis) in info.value.message
    with pytest.raises(WorkflowError, match="E404: Stage tokenize: input nowhere.txt is missing"):
        Runner(project, load_config(project, [*overrides, 'tokenize.extra_corpora=["nowhere.txt"]'])).run("tokenize")


def test_bench_tokenize_corpus_reports_speed_size_and_memory_per_worker_count(tmp_path):
    import os

    from pipeline.bench.tokenize import benchmark_corpus

    corpus = write_txt(tmp_path / "c.txt.gz", LINES * 20)
    result = benchmark_corpus(corpus=corpus, workers=(1, 2), lines=70, shard_lines=10, rounds=2)
    assert result["sentences"] == sum(1 for line in (LINES * 10)[:70] if line)  # only the first 70 lines
    assert set(result["runs"]) == {"1", "2"} and result["speedup"]["1"] == 1.0
    for run in result["runs"].values():
        assert run["sentences_per_second"] > 0 and run["mb_per_second"] > 0 and run["peak_rss_mb_per_process"] > 0
    assert result["runs"]["1"]["processes"] == 1 and result["runs"]["1"]["cpu_seconds_workers"] == 0
    assert result["store_to_text"] > 0 and result["runs"]["1"]["store_bytes"] == result["runs"]["2"]["store_bytes"]
    assert result["cpus"] == len(os.sched_getaffinity(0))
    assert all(len(run["all_seconds"]) == 2 and run["seconds"] == min(run["all_seconds"]) for run in result["runs"].values())


@pytest.mark.parametrize("meta", [{"kind": "jpipe token store", "format": 99}, {"kind": "something else", "format": 1}])
def test_a_directory_in_another_format_is_a_coded_error_that_says_to_rebuild(tmp_path, meta):
    (tmp_path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(InputError) as error:
        TokenStore.open(tmp_path)
    assert error.value.code == "E265" and "tokenize" in error.value.hint
