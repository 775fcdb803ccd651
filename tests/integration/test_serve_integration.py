"""``jpipe serve`` on models trained on the real KNBC: a real uvicorn process answers like the library,
concurrent requests are batched, and ``jpipe bench serve`` runs end to end and stops by itself.

Short trainings (one epoch, small layers, random embeddings) in a copy of the session's tokenized
project; what is checked is the service, not the models' quality.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests.conftest import SMALL_CLASSIFIER_SETTINGS, SMALL_GENERATOR_SETTINGS, run_stage

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")]


@pytest.fixture(scope="module")
def trained(real_project, tmp_path_factory):
    project = tmp_path_factory.mktemp("serve") / "proj"
    shutil.copytree(real_project, project)
    run_stage(project, "word2vec", ["word2vec.epochs=2", "word2vec.vector_size=32"])
    for task in ("topic", "sentiment"):
        run_stage(project, f"train_{task}", [f"tasks.{task}.classifier.{s}" for s in SMALL_CLASSIFIER_SETTINGS])
    run_stage(project, "train_generator", SMALL_GENERATOR_SETTINGS)
    return project


@pytest.fixture()
def server(trained, tmp_path):
    from pipeline.bench.serve import ServerProcess, free_port

    process = ServerProcess(project_dir=trained, port=free_port(), overrides=["serve.max_wait_ms=5"], log_path=tmp_path / "server.log")
    try:
        process.wait_ready(timeout=180)
        yield process
    finally:
        process.stop()
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait(timeout=10)


async def _classify_concurrently(url: str, texts: list[str]) -> list[dict]:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        semaphore = asyncio.Semaphore(32)

        async def one(text: str) -> dict:
            async with semaphore:
                response = await client.post("/v1/classify", json={"texts": [text]})
                assert response.status_code == 200, response.text
                return response.json()["results"][0]

        return await asyncio.gather(*(one(text) for text in texts))


def test_real_server_answers_like_the_library_under_concurrency(trained, server):
    import httpx

    from pipeline import Classifier, Vectors
    from pipeline.paths import TOKENS, WORD2VEC_DIR, classifier_dir
    from pipeline.text.tokenize import read_token_rows

    texts = [row["text"] for row in read_token_rows(trained / TOKENS, split="test")][:400]
    rows = asyncio.run(_classify_concurrently(server.url, texts))
    stats = httpx.get(server.url + "/v1/stats").json()["classify"]
    assert stats["merged_batches"] >= 1 and stats["mean_batch_texts"] > 1  # 32 clients at a time: requests were merged
    for task in ("topic", "sentiment"):
        predictions = Classifier.from_dir(trained / classifier_dir(task)).predict(texts)
        for row, prediction in zip(rows, predictions, strict=True):
            assert row["error"] is None and row["tasks"][task]["label"] == prediction.label
            assert row["tasks"][task]["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-5)
    similar = httpx.get(server.url + "/v1/similar", params={"word": "京都", "topn": 5}).json()
    expected = Vectors.load(trained / WORD2VEC_DIR).most_similar("京都", topn=5)
    assert [n["word"] for n in similar["neighbours"]] == [word for word, _ in expected]
    with httpx.stream(
        "POST", server.url + "/v1/generate", json={"prompt": "京都の", "seed": 7, "max_tokens": 20, "stream": True}
    ) as stream:
        events = [json.loads(block[6:]) for block in "".join(stream.iter_text()).split("\n\n") if block.startswith("data: ")]
    plain = httpx.post(server.url + "/v1/generate", json={"prompt": "京都の", "seed": 7, "max_tokens": 20}).json()
    assert events[-1]["done"] is True and events[-1]["text"] == plain["text"] == "".join(e["token"] for e in events[:-1])


def test_bench_serve_runs_and_stops_by_itself(trained):
    from typer.testing import CliRunner

    from pipeline.cli import app

    # the Python client (--requests bounds it; wrk, the default when installed, runs --seconds: tests/unit/test_bench_wrk.py)
    args = ["--dir", str(trained), "bench", "serve", "--json", "--client", "raw", "--requests", "300", "--seconds", "10"]
    args += ["--offline-reviews", "500"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["classify"]["requests"] == 300 and report["classify"]["errors"] == 0 and report["classify"]["clients"] == 32
    assert report["similar"]["requests"] == 300 and report["similar"]["errors"] == 0
    assert report["offline_classify"]["reviews_per_second"] > 0 and report["rss_mb"]["start"] > 0 and report["rss_mb"]["end"] > 0
    assert set(report["goals"]) == {"classify_throughput_ratio", "classify_p99_ms", "similar_p99_ms", "rss_growth"}
    assert report["stop_seconds"] < 30  # the server stopped on SIGTERM, not after the kill timeout
