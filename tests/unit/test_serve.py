"""``jpipe serve``: every endpoint through FastAPI's TestClient on a tiny trained project, micro-batching,
readiness, graceful shutdown, and one real uvicorn process on a free loopback port.

The tiny project has topic and sentiment classifiers, a generator and word2vec vectors,
each trained in a second or two (``tests.conftest`` fixtures).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("sudachipy")

from pipeline.paths import GENERATOR_DIR, WORD2VEC_DIR, classifier_dir  # noqa: E402
from tests.conftest import TINY_GENERATOR_SETTINGS, fast_overrides, run_stage, write_tiny_project  # noqa: E402

# Starlette >= 1.x suggests httpx2 for its TestClient; httpx still works.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TEXTS = ["ラーメンが美味しい", "携帯の画面が最悪", "京都の紅葉は最高", "野球の試合に行く", "サッカー選手が好き。" * 3]


def write_vectors(project: Path) -> None:
    """A real vector directory (meta.json, words.txt, .npy) over the tiny corpus' words, as `jpipe run word2vec` writes."""
    import numpy as np

    from pipeline.vectors.store import make_keyed_vectors, write_vector_dir
    from tests.conftest import FILLER, SENTIMENT_WORDS, THEME_WORDS

    words = [w for group in THEME_WORDS.values() for w in group] + [w for group in SENTIMENT_WORDS.values() for w in group] + FILLER
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(words), 8)).astype(np.float32)
    for group in THEME_WORDS.values():  # words of one theme close together
        center = rng.normal(size=8).astype(np.float32) * 3
        for word in group:
            vectors[words.index(word)] += center
    meta = {"source": "word2vec", "token_field": "norm", "split_mode": "C"}
    write_vector_dir(project / WORD2VEC_DIR, keyed_vectors=make_keyed_vectors(words, vectors), meta=meta)


def build_served_project(directory: Path) -> Path:
    """Tiny project: topic + sentiment classifiers, a generator, word2vec vectors."""
    import torch

    torch.set_num_threads(1)
    project = write_tiny_project(directory)
    run_stage(project, "train_topic", fast_overrides("topic"))
    run_stage(project, "train_sentiment", fast_overrides("sentiment"))
    run_stage(project, "train_generator", TINY_GENERATOR_SETTINGS)
    write_vectors(project)
    return project


def serve_limits(**values):
    from pipeline.config import load_config

    config = load_config(Path("/nonexistent-project"), [])
    return config.with_values({f"serve.{key}": value for key, value in values.items()})["serve"]


@pytest.fixture(scope="module")
def served_project(tmp_path_factory) -> Path:
    return build_served_project(tmp_path_factory.mktemp("serve") / "proj")


@pytest.fixture(scope="module")
def client(served_project):
    from fastapi.testclient import TestClient

    from pipeline.serve.app import create_app

    limits = serve_limits(max_texts=8, max_chars=50, max_generate_tokens=30, max_topn=20, max_pairs=5, max_body_bytes=4096)
    with TestClient(create_app(project_dir=served_project, limits=limits, load_in_background=False)) as test_client:
        yield test_client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"] and "hint" in body["error"]
    assert "--" not in (body["error"]["hint"] or "")
    return body["error"]


# ------------------------------------------------------------------ service endpoints
def test_health_ready_models_and_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["sentiment", "topic", "generator", "word2vec"]
    models = client.get("/v1/models").json()
    assert models["tasks"] == ["sentiment", "topic"] and models["generator"] is True and models["vector_sources"] == ["word2vec"]
    by_name = {entry["name"]: entry for entry in models["models"]}
    assert by_name["topic"]["labels"] == ["Gourmet", "Keitai", "Kyoto", "Sports"] and by_name["topic"]["format_version"] == 1
    assert by_name["sentiment"]["labels"] == ["negative", "neutral", "positive"]
    assert by_name["generator"]["themes"] and by_name["word2vec"]["vocab_size"] == 42
    assert by_name["topic"]["test_metrics"] == {}  # no report in this project
    assert client.get("/openapi.json").json()["paths"].keys() >= {"/v1/classify", "/v1/similar", "/v1/generate", "/v1/models"}
    assert client.get("/docs").status_code == 200


# ------------------------------------------------------------------ classify
def test_classify_equals_the_library_and_explains(client, served_project):
    from pipeline import Classifier

    response = client.post("/v1/classify", json={"texts": TEXTS[:4], "explain": True})
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["tasks"]["topic"]["labels"] == ["Gourmet", "Keitai", "Kyoto", "Sports"]
    for task in ("topic", "sentiment"):
        predictions = Classifier.from_dir(served_project / classifier_dir(task)).predict(TEXTS[:4], attention=True)
        for row, prediction in zip(body["results"], predictions, strict=True):
            got = row["tasks"][task]
            assert row["error"] is None and got["label"] == prediction.label
            assert got["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-6)
            assert got["tokens"] == prediction.tokens and sum(got["weights"]) == pytest.approx(1.0, abs=1e-5)
    plain = client.post("/v1/classify", json={"texts": ["京都の紅葉は最高"], "tasks": ["sentiment"]}).json()["results"][0]
    assert set(plain["tasks"]) == {"sentiment"} and set(plain["tasks"]["sentiment"]) == {"label", "probabilities"}


def test_classify_rows_carry_language_and_a_warning_when_not_japanese(client):
    texts = ["京都の紅葉は最高でした", "This is an English sentence about Kyoto.", "😀😀🎉", ""]
    results = client.post("/v1/classify", json={"texts": texts}).json()["results"]
    japanese, english, emoji, empty = results
    assert japanese["language"] == "ja" and japanese["warning"] is None
    assert english["language"] == "other" and english["warning"].startswith("not Japanese")
    assert emoji["language"] == "other" and "no letters" in emoji["warning"]
    for row in (english, emoji):  # the labels are kept beside the warning
        assert row["error"] is None and set(row["tasks"]) == {"topic", "sentiment"} and row["tasks"]["topic"]["label"]
    assert empty["error"]["code"] == "E236" and empty["language"] is None and empty["warning"] is None


def test_classify_bad_rows_get_their_own_error(client):
    texts = ["京都の紅葉は最高", "", "   ", "長" * 51, "\ud800京都", "ラーメン"]
    body = json.dumps({"texts": texts}).encode("ascii")  # "\ud800" travels as a JSON escape
    results = client.post("/v1/classify", content=body, headers={"content-type": "application/json"}).json()["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["error"]["code"] if r["error"] else None for r in results] == [None, "E236", "E236", "E244", "E236", None]
    assert results[1]["tasks"] == {} and results[5]["tasks"]["topic"]["label"] == "Gourmet"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"texts": ["a"] * 9}, 413, "E243"),
        ({"texts": []}, 422, "E241"),
        ({"texts": ["京都"], "tasks": ["weather"]}, 404, "E331"),
        ({"texts": "京都"}, 422, "E241"),
        ({"text": ["京都"]}, 422, "E241"),
        ({"texts": [1, 2]}, 422, "E241"),
    ],
)
def test_classify_request_errors(client, body, status, code):
    assert_error(client.post("/v1/classify", json=body), status, code)


# ------------------------------------------------------------------ vectors
def test_similar_similarity_analogy(client, served_project):
    from pipeline import Vectors

    body = client.get("/v1/similar", params={"word": "京都", "topn": 3}).json()
    expected = Vectors.load(served_project / WORD2VEC_DIR).most_similar("京都", topn=3)
    assert body["word"] == "京都" and body["source"] == "word2vec" and body["composed"] is False and body["keys"] == ["京都"]
    assert [(n["word"], n["score"]) for n in body["neighbours"]] == [(w, round(s, 4)) for w, s in expected]
    assert client.get("/v1/similar", params={"word": "京都の寺"}).json()["composed"] is True
    scores = client.post("/v1/similarity", json={"pairs": [["京都", "寺"], ["京都", "ピクセル"]]}).json()
    assert scores["scores"][0] == pytest.approx(Vectors.load(served_project / WORD2VEC_DIR).similarity("京都", "寺"), abs=1e-4)
    assert scores["scores"][1] is None and scores["errors"][0] is None and scores["errors"][1]["code"] == "E208"
    analogy = client.post("/v1/analogy", json={"a": "京都", "b": "寺", "c": "野球", "topn": 2}).json()
    assert len(analogy["neighbours"]) == 2 and analogy["source"] == "word2vec"


def test_vector_errors(client):
    assert_error(client.get("/v1/similar", params={"word": "ピクセル"}), 404, "E208")
    assert_error(client.get("/v1/similar", params={"word": "京都", "source": "spacy"}), 404, "E331")
    assert_error(client.get("/v1/similar", params={"word": "京都", "topn": 21}), 422, "E241")
    assert_error(client.get("/v1/similar", params={"word": "京都", "topn": "many"}), 422, "E241")
    assert_error(client.get("/v1/similar"), 422, "E241")
    assert_error(client.get("/v1/similar", params={"word": " "}), 422, "E207")
    assert_error(client.post("/v1/similarity", json={"pairs": [["a", "b"]] * 6}), 413, "E243")
    assert_error(client.post("/v1/similarity", json={"pairs": [["a"]]}), 422, "E241")
    assert_error(client.post("/v1/analogy", json={"a": "京都", "b": "寺", "c": "ピクセル"}), 404, "E208")


# ------------------------------------------------------------------ generate
def sse_events(text: str) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in text.split("\n\n") if line.startswith("data: ")]


def test_generate_json_and_stream_equal_the_library(client, served_project):
    from pipeline import Generator

    options = {"prompt": "京都の", "max_tokens": 12, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "seed": 5}
    body = client.post("/v1/generate", json=options).json()
    expected = Generator.from_dir(served_project / GENERATOR_DIR).generate("京都の", **{k: v for k, v in options.items() if k != "prompt"})
    assert body["text"] == expected.text and body["samples"] == expected.samples and body["seed"] == 5
    streamed = client.post("/v1/generate", json={**options, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1]["done"] is True and events[-1]["text"] == expected.text and events[-1]["seed"] == 5
    assert events[0] == {"token": "京都の"} and "".join(e["token"] for e in events[:-1]) == expected.text
    greedy = [client.post("/v1/generate", json={"prompt": "", "temperature": 0, "seed": s, "max_tokens": 8}).json()["text"] for s in (1, 2)]
    assert greedy[0] == greedy[1]
    three = client.post("/v1/generate", json={"num": 3, "max_tokens": 5, "seed": 1, "theme": "京都観光"}).json()
    assert len(three["samples"]) == 3 and three["theme"] == "Kyoto"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"max_tokens": 31}, 422, "E247"),
        ({"num": 2, "stream": True}, 422, "E247"),
        ({"temperature": -1}, 422, "E241"),
        ({"top_p": 0}, 422, "E241"),
        ({"seed": -3}, 422, "E241"),
        ({"theme": "Weather"}, 422, "E109"),
        ({"prompt": "長" * 51}, 422, "E244"),
    ],
)
def test_generate_errors(client, body, status, code):
    assert_error(client.post("/v1/generate", json=body), status, code)


# ------------------------------------------------------------------ protocol errors
def test_protocol_errors_are_json(client):
    assert_error(client.post("/v1/classify", content=b"{", headers={"content-type": "application/json"}), 400, "E240")
    assert_error(client.post("/v1/classify", content=b"\xff\xfe\x00", headers={"content-type": "application/json"}), 400, "E240")
    assert_error(client.post("/v1/classify", content=b"texts", headers={"content-type": "text/plain"}), 415, "E245")
    assert_error(client.post("/v1/classify", content=b"texts=a", headers={"content-type": "multipart/form-data; boundary=x"}), 415, "E245")
    # curl -d sends a form content type: the body is read as JSON all the same.
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/v1/classify", content=json.dumps({"texts": ["京都"]}).encode(), headers=form).status_code == 200
    assert_error(client.post("/v1/classify", content=b"texts=a", headers=form), 400, "E240")
    assert_error(client.post("/v1/classify", content=b"x" * 5000, headers={"content-type": "application/json"}), 413, "E242")
    assert_error(client.get("/v1/nothing"), 404, "E246")
    assert_error(client.get("/v1/classify"), 405, "E246")
    assert_error(client.post("/v1/classify", content=b'{"texts": NaN}', headers={"content-type": "application/json"}), 422, "E241")
    # Without a content type the body is read as JSON (curl -d).
    assert client.post("/v1/classify", content=json.dumps({"texts": ["京都"]}).encode()).status_code == 200


def test_page_is_served_when_shipped(client):
    from pipeline.serve.app import STATIC_DIR

    response = client.get("/")
    assert response.status_code == 200
    if (STATIC_DIR / "index.html").is_file():
        assert response.headers["content-type"].startswith("text/html")


# ------------------------------------------------------------------ loading states
def test_readyz_is_503_until_the_models_are_loaded(served_project, monkeypatch):
    from fastapi.testclient import TestClient

    from pipeline.serve import app as app_module

    release = threading.Event()
    real_load = app_module.load_models

    def slow_load(*args, **kwargs):
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(app_module, "load_models", slow_load)
    with TestClient(app_module.create_app(project_dir=served_project, limits=serve_limits())) as test_client:
        assert test_client.get("/healthz").status_code == 200
        assert_error(test_client.get("/readyz"), 503, "E330")
        assert_error(test_client.post("/v1/classify", json={"texts": ["京都"]}), 503, "E330")
        release.set()
        for _ in range(300):
            if test_client.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert test_client.post("/v1/classify", json={"texts": ["京都"]}).status_code == 200


def test_a_project_without_generator_still_serves_classify(served_project, tmp_path):
    from fastapi.testclient import TestClient

    from pipeline.serve.app import create_app

    project = tmp_path / "partial"
    shutil.copytree(served_project / "models" / "classifier", project / "models" / "classifier")
    with TestClient(create_app(project_dir=project, limits=serve_limits(), load_in_background=False)) as test_client:
        assert test_client.post("/v1/classify", json={"texts": ["京都"]}).json()["results"][0]["error"] is None
        assert_error(test_client.post("/v1/generate", json={}), 404, "E331")
        assert_error(test_client.get("/v1/similar", params={"word": "京都"}), 404, "E331")


def test_models_show_the_seed_spread_and_auto_is_the_default_vector_source(served_project, tmp_path):
    """/v1/models carries the report's mean and std over seeds (the demo page shows them), and a project
    with ginza and word2vec vectors answers /v1/similar from ginza by default and for source=auto."""
    import numpy as np
    from fastapi.testclient import TestClient

    from pipeline.paths import GINZA_VECTORS_DIR, METRICS
    from pipeline.serve.app import create_app
    from pipeline.vectors.store import make_keyed_vectors, write_vector_dir

    project = tmp_path / "seeds"
    shutil.copytree(served_project, project)
    words = ["京都", "寺", "野球", "ラーメン"]
    vectors = [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    meta = {"source": "ginza", "token_field": "norm", "split_mode": "C"}
    write_vector_dir(project / GINZA_VECTORS_DIR, keyed_vectors=make_keyed_vectors(words, np.float32(vectors)), meta=meta)
    spread = {"macro_f1": 0.5, "accuracy": 0.6, "seeds": 3, "macro_f1_mean": 0.55, "macro_f1_std": 0.02, "accuracy_mean": 0.65}
    report = {
        "topic": {"bilstm_attention": spread | {"accuracy_std": 0.01, "test_sentences": 40}},
        "sentiment": {"bilstm_attention": {"macro_f1": 0.4, "accuracy": 0.5, "seeds": 1, "macro_f1_mean": 0.4, "macro_f1_std": 0.0}},
        "generator": {"lstm": {"perplexity": 90.0, "seeds": 2, "saved_seed": 13, "perplexity_mean": 95.5, "perplexity_std": 4.5}},
    }
    (project / METRICS).parent.mkdir(parents=True, exist_ok=True)
    (project / METRICS).write_text(json.dumps(report), encoding="utf-8")
    with TestClient(create_app(project_dir=project, limits=serve_limits(), load_in_background=False)) as test_client:
        entries = {entry["name"]: entry for entry in test_client.get("/v1/models").json()["models"]}
        assert entries["topic"]["test_metrics"] == {**spread, "accuracy_std": 0.01, "test_sentences": 40}
        assert entries["sentiment"]["test_metrics"]["seeds"] == 1
        assert entries["generator"]["test_metrics"] == {
            "perplexity": 90.0,
            "seeds": 2,
            "saved_seed": 13,
            "perplexity_mean": 95.5,
            "perplexity_std": 4.5,
        }
        assert test_client.get("/v1/similar", params={"word": "京都", "topn": 1}).json()["source"] == "ginza"
        auto = test_client.get("/v1/similar", params={"word": "京都", "topn": 1, "source": "auto"}).json()
        assert auto["source"] == "ginza" and auto["neighbours"][0]["word"] == "寺"
        assert test_client.post("/v1/similarity", json={"pairs": [["京都", "寺"]], "source": "auto"}).json()["source"] == "ginza"
        assert test_client.get("/v1/similar", params={"word": "京都", "topn": 1, "source": "word2vec"}).json()["source"] == "word2vec"


def test_auto_source_order():
    from pipeline.serve.service import auto_source

    assert auto_source({"word2vec": 1, "spacy": 2, "ginza": 3}) == "ginza"
    assert auto_source({"spacy": 1, "word2vec": 2}) == "word2vec"
    assert auto_source({"spacy": 1, "imported": 2}) == "spacy"


def test_a_project_without_models_is_an_error(tmp_path):
    from fastapi.testclient import TestClient

    from pipeline.errors import ModelError
    from pipeline.serve.app import create_app
    from pipeline.serve.registry import require_models

    with pytest.raises(ModelError, match="E301"):
        require_models(tmp_path)
    with TestClient(create_app(project_dir=tmp_path, limits=serve_limits(), load_in_background=False)) as test_client:
        assert_error(test_client.get("/readyz"), 503, "E301")


# ------------------------------------------------------------------ micro-batching
async def _concurrent_and_single(app, texts: list[str]) -> tuple[list[dict], list[dict], dict]:
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            runtime = app.state.runtime
            while runtime.status == "loading":
                await asyncio.sleep(0.01)
            together = await asyncio.gather(*(http.post("/v1/classify", json={"texts": [text]}) for text in texts))
            stats = (await http.get("/v1/stats")).json()["classify"]
            alone = [await http.post("/v1/classify", json={"texts": [text]}) for text in texts]
    return [r.json() for r in together], [r.json() for r in alone], stats


def test_concurrent_requests_are_merged_and_equal_single_requests(served_project):
    from pipeline.serve.app import create_app

    rng = random.Random(0)
    texts = [rng.choice(TEXTS) + rng.choice(["", "。", "と野球", "の店"]) for _ in range(24)]
    app = create_app(project_dir=served_project, limits=serve_limits(max_wait_ms=200.0, max_batch_size=16), load_in_background=False)
    together, alone, stats = asyncio.run(_concurrent_and_single(app, texts))
    assert stats["requests"] == 24 and stats["batches"] < 24 and stats["merged_batches"] >= 1
    assert 1 < stats["max_batch_requests"] and stats["max_batch_texts"] <= 16
    for merged, single in zip(together, alone, strict=True):
        for task in ("topic", "sentiment"):
            a, b = merged["results"][0]["tasks"][task], single["results"][0]["tasks"][task]
            assert a["label"] == b["label"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_batcher_finishes_queued_items_on_stop():
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.serve.batching import MicroBatcher

    async def scenario():
        with ThreadPoolExecutor(max_workers=1) as pool:
            batcher = MicroBatcher(
                lambda rows, tasks: [r * 2 for r in rows], executor=pool, max_batch_size=4, max_wait_ms=100, max_queue=100
            )
            batcher.start()
            pending = [asyncio.ensure_future(batcher.submit([i, i + 1], ("topic",))) for i in range(5)]
            await asyncio.sleep(0)
            await batcher.stop()  # graceful: everything queued is answered
            results = await asyncio.gather(*pending)
            return results, batcher.stats

    results, stats = asyncio.run(scenario())
    assert results == [[2 * i, 2 * i + 2] for i in range(5)]
    assert stats.batches == 3 and stats.max_batch_texts == 4 and stats.requests == 5


def test_batcher_refuses_beyond_the_queue_limit():
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.errors import ModelError
    from pipeline.serve.batching import MicroBatcher

    release = threading.Event()

    def run_batch(rows, tasks):
        release.wait(10)
        return rows

    async def scenario():
        with ThreadPoolExecutor(max_workers=1) as pool:
            batcher = MicroBatcher(run_batch, executor=pool, max_batch_size=2, max_wait_ms=0, max_queue=3)
            batcher.start()
            running = asyncio.ensure_future(batcher.submit([0], ()))  # taken at once, blocks the model thread
            await asyncio.sleep(0.05)
            queued = asyncio.ensure_future(batcher.submit([1, 2, 3], ()))  # waits: the queue now holds 3 texts
            await asyncio.sleep(0.05)
            with pytest.raises(ModelError, match="E332"):
                await batcher.submit([4], ())
            release.set()
            results = await asyncio.gather(running, queued)
            await batcher.stop()
            return results, batcher.stats.refused

    assert asyncio.run(scenario()) == ([[0], [1, 2, 3]], 1)


# ------------------------------------------------------------------ a real server process
def test_real_uvicorn_process_serves_streams_and_stops_gracefully(served_project, tmp_path):
    """`python -m pipeline serve` on a free loopback port: classify, SSE stream, then SIGTERM with a request in flight."""
    import httpx

    from pipeline.bench.serve import ServerProcess, free_port

    server = ServerProcess(
        project_dir=served_project, port=free_port(), overrides=["serve.max_wait_ms=1000"], log_path=tmp_path / "server.log"
    )
    try:
        server.wait_ready(timeout=120)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/v1/classify", json={"texts": ["京都の紅葉は最高"]}).json()["results"][0]["error"] is None
            with http.stream("POST", "/v1/generate", json={"prompt": "京都の", "seed": 3, "max_tokens": 6, "stream": True}) as stream:
                events = sse_events("".join(stream.iter_text()))
            assert events[-1]["done"] is True and "".join(e["token"] for e in events[:-1]) == events[-1]["text"]
        # A classify request waits up to 1 s for company; SIGTERM arrives meanwhile, and it must still be answered.
        answer: dict = {}

        def in_flight() -> None:
            answer["response"] = httpx.post(server.url + "/v1/classify", json={"texts": ["ラーメン"]}, timeout=30)

        thread = threading.Thread(target=in_flight)
        thread.start()
        threading.Event().wait(0.5)
        stopped = server.stop()
        thread.join(timeout=30)
        # uvicorn re-raises the signal once it has shut down cleanly: exit status -15 (SIGTERM), or 0 with older versions.
        assert stopped is not None and server.process.returncode in (0, -15), server.log_path.read_text(encoding="utf-8")
        assert "Application shutdown complete" in server.log_path.read_text(encoding="utf-8")
        assert answer["response"].status_code == 200 and answer["response"].json()["results"][0]["error"] is None
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=10)


def test_jpipe_help_imports_neither_torch_nor_fastapi():
    import subprocess
    import sys

    code = "import sys; from pipeline.cli import app; import typer.main; typer.main.get_command(app); print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'httpx') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------ Generator.stream
@pytest.mark.parametrize(
    "prompt, options",
    [
        ("京都の", {"seed": 7}),
        ("", {"seed": 3, "temperature": 0.7, "top_k": 10, "top_p": 0.9, "theme": "Kyoto"}),
        ("ラーメン", {"temperature": 0, "seed": 1}),
        ("Windows Vista", {"seed": 11, "max_tokens": 4}),
    ],
)
def test_generator_stream_joins_into_the_generated_text(served_project, prompt, options):
    from pipeline import Generator

    generator = Generator.from_dir(served_project / GENERATOR_DIR)
    options = {"max_tokens": 15, **options}
    pieces = list(generator.stream(prompt, **options))
    assert "".join(pieces) == generator.generate(prompt, **options).text
    if prompt:
        assert pieces[0] == prompt.replace(" Vista", " Vista")  # the prompt comes first, as tokenized and joined
    assert len(pieces) - bool(prompt) <= options["max_tokens"]


def test_generator_stream_checks_options_at_the_call(served_project):
    from pipeline import Generator
    from pipeline.errors import ConfigError

    generator = Generator.from_dir(served_project / GENERATOR_DIR)
    with pytest.raises(ConfigError, match="E109"):
        generator.stream("京都", temperature=-1)  # raised before the first piece is asked for
    with pytest.raises(ConfigError, match="E109"):
        generator.stream_plan(generator.prepare("京都", num=2))


# ------------------------------------------------------------------ bench helpers
def test_bench_summary_goals_and_report():
    from pipeline.bench.serve import _percentile, check_goals, format_report, summarize

    assert _percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and _percentile(list(range(1, 101)), 0.99) == 99
    row = summarize([0.01] * 99 + [0.2], errors=1, seconds=2.0, clients=32)
    assert row["requests"] == 100 and row["requests_per_second"] == 50.0 and row["p50_ms"] == 10.0 and row["p99_ms"] == 10.0
    result = {
        "classify": {**row, "batching": {"mean_batch_texts": 7.5, "max_batch_texts": 32, "batches": 10}},
        "similar": summarize([0.002] * 10, errors=0, seconds=1.0, clients=4),
        "offline_classify": {"reviews_per_second": 100.0, "reviews": 500},
        "rss_mb": {"loaded": 300.0, "start": 400.0, "end": 420.0, "max": 425.0},
        "cpu_seconds": {"server": 1.0, "clients": 1.0},
        "ready_seconds": 1.2,
        "cpu_count": 2,
        "serve_settings": {},
    }
    result["goals"] = check_goals(result)
    assert result["goals"]["classify_throughput_ratio"] == {"value": 0.5, "goal": ">= 0.7", "met": False}
    assert result["goals"]["similar_p99_ms"]["met"] and result["goals"]["rss_growth"]["met"]
    text = format_report(result)
    assert "classify" in text and "MISSED" in text and "offline classify" in text


def test_extract_without_an_extractor_is_404(client):
    answer = client.post("/v1/extract", json={"texts": ["ラーメンが美味しい"]})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "E331"
    assert "train_extractor" in answer.json()["error"]["hint"]
