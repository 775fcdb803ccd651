"""``tokenize.engine = "ray"``: Ray tasks write the same shards, so the token store equals the local engine's."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.text.sharded import ShardSettings, build_store

ray = pytest.importorskip("ray")

LINES = ["京都の寺で紅葉を見た。", "携帯の電池がすぐ切れる。", "", "ラーメンが美味しい店。", "阪神が勝った！", "", "今日は雨だ。"]


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_ray_engine_writes_the_same_store_as_local_workers(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(LINES * 10) + "\n", encoding="utf-8")
    settings = ShardSettings(shard_lines=7)
    build_store([("c.txt", corpus)], out_dir=tmp_path / "local", work_dir=tmp_path / "wl", settings=settings, workers=2)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        calls: list[str] = []
        build_store(
            [("c.txt", corpus)],
            out_dir=tmp_path / "ray",
            work_dir=tmp_path / "wr",
            settings=settings,
            workers=2,
            engine="ray",
            on_shard=lambda result: calls.append(result["path"]),
        )
        assert ray.is_initialized()  # a Ray instance the caller started is left running
    finally:
        ray.shutdown()
    assert len(calls) == 10
    assert tree(tmp_path / "ray") == tree(tmp_path / "local") and len(tree(tmp_path / "local")) == 12


def test_missing_ray_is_a_coded_error(monkeypatch):
    import sys

    from pipeline.errors import ConfigError
    from pipeline.text import ray_tokenize

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ConfigError, match="E110") as info:
        list(ray_tokenize.run_ray(iter([]), workers=1))
    assert "jpipe[ray]" in info.value.hint
