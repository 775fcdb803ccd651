"""Property-based fuzzing of the HTTP API: random JSON, random bytes and random query strings to every endpoint.

Whatever arrives, the server answers 2xx or 4xx (never 5xx), every error is JSON of the
shape ``{"error": {"code", "kind", "message", "hint"}}`` with a code listed in
``pipeline.errors.CODES``, and the server keeps answering afterwards.
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline.errors import CODES  # noqa: E402
from tests.unit.test_serve import build_served_project, serve_limits  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

# JPIPE_FUZZ_EXAMPLES=2000 for a longer hunt; 120 per test keeps the suite at ~15 s.
FUZZ = settings(
    max_examples=int(os.environ.get("JPIPE_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
POST_ENDPOINTS = ["/v1/classify", "/v1/similarity", "/v1/analogy", "/v1/generate", "/v1/extract"]
GET_ENDPOINTS = ["/v1/similar", "/v1/models", "/v1/stats", "/healthz", "/readyz", "/"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
    "application/ld+json",
]

# Text that reaches the tokenizer and the vectors: Japanese, Latin, symbols, whitespace, lone surrogates (as JSON escapes).
pieces = st.sampled_from(
    ["京都", "ラーメン", "最高", "の", "寺", "野球", " ", "\n", "\t", "。", "a", "Windows", "\x00", "\ud800", "🍜", "ｶﾞ", ""]
)
texts = st.one_of(st.text(max_size=40), st.lists(pieces, max_size=12).map("".join))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), texts)
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5), max_leaves=15
)

# Bodies near the real schemas, so that validation passes often and the handlers themselves are fuzzed.
small_ints = st.one_of(st.integers(min_value=-5, max_value=40), st.integers(), st.sampled_from([0, 1, 2**63, -(2**63)]))
floats = st.one_of(
    st.floats(min_value=-2, max_value=3), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-320, 1e308])
)
SCHEMA_LIKE = {
    "/v1/classify": st.fixed_dictionaries(
        {"texts": st.one_of(st.lists(texts, max_size=10), json_values)},
        optional={"tasks": st.one_of(st.lists(st.sampled_from(["topic", "sentiment", "x"]), max_size=3), json_values), "explain": scalars},
    ),
    "/v1/similarity": st.fixed_dictionaries(
        {"pairs": st.one_of(st.lists(st.tuples(texts, texts), max_size=7), json_values)},
        optional={"source": st.one_of(st.sampled_from(["word2vec", "spacy", "imported"]), texts, st.none())},
    ),
    "/v1/extract": st.fixed_dictionaries(
        {"texts": st.one_of(st.lists(texts, max_size=10), json_values)}, optional={"beam": st.one_of(small_ints, json_values)}
    ),
    "/v1/analogy": st.fixed_dictionaries(
        {"a": texts, "b": texts, "c": texts}, optional={"topn": small_ints, "source": st.sampled_from(["word2vec", "spacy"])}
    ),
    "/v1/generate": st.fixed_dictionaries(
        {},
        optional={
            "prompt": texts,
            "theme": st.one_of(st.sampled_from(["Kyoto", "グルメ", "sports", "Weather"]), texts, st.none()),
            "max_tokens": small_ints,
            "temperature": floats,
            "top_k": small_ints,
            "top_p": floats,
            "seed": small_ints,
            "num": small_ints,
            "stream": scalars,
        },
    ),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from fastapi.testclient import TestClient

    from pipeline.serve.app import create_app

    project = build_served_project(tmp_path_factory.mktemp("fuzz") / "proj")
    limits = serve_limits(max_texts=8, max_chars=200, max_generate_tokens=20, max_topn=50, max_pairs=6, max_body_bytes=8192)
    with TestClient(create_app(project_dir=project, limits=limits, load_in_background=False), raise_server_exceptions=False) as test_client:
        yield test_client


def check_answer(response) -> None:
    """2xx or 4xx; errors as coded JSON; a 200 event stream made of JSON events."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    content_type = response.headers.get("content-type", "")
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        error = body["error"]
        assert error["code"] in CODES and isinstance(error["message"], str) and error["message"], error
        assert set(error) == {"code", "kind", "message", "hint"}, error
    elif content_type.startswith("text/event-stream"):
        events = [json.loads(block[len("data: ") :]) for block in response.text.split("\n\n") if block.startswith("data: ")]
        assert events and events[-1].get("done") is True, events[-3:]
    elif content_type.startswith("application/json"):
        response.json()


def post(client, path: str, body: bytes, content_type: str = "application/json"):
    headers = {"content-type": content_type} if content_type else {}
    return client.post(path, content=body, headers=headers)


@FUZZ
@given(path=st.sampled_from(POST_ENDPOINTS), value=json_values)
def test_random_json_to_post_endpoints(client, path, value):
    check_answer(post(client, path, json.dumps(value, ensure_ascii=True).encode("ascii")))


@FUZZ
@given(data=st.data(), path=st.sampled_from(POST_ENDPOINTS))
def test_schema_like_json_to_post_endpoints(client, data, path):
    value = data.draw(SCHEMA_LIKE[path])
    check_answer(post(client, path, json.dumps(value, ensure_ascii=True).encode("ascii")))


@FUZZ
@given(path=st.sampled_from(POST_ENDPOINTS + GET_ENDPOINTS), body=st.binary(max_size=3000), content_type=st.sampled_from(CONTENT_TYPES))
def test_random_bytes_to_every_endpoint(client, path, body, content_type):
    check_answer(post(client, path, body, content_type))


@FUZZ
@given(
    path=st.sampled_from(GET_ENDPOINTS + POST_ENDPOINTS),
    params=st.dictionaries(st.sampled_from(["word", "topn", "source", "x"]), st.one_of(texts, st.integers().map(str)), max_size=4),
)
def test_random_queries_to_every_endpoint(client, path, params):
    params = {key: value.replace("\ud800", "") for key, value in params.items()}  # a URL cannot carry a lone surrogate
    check_answer(client.get(path, params=params))


def test_the_server_is_still_up_after_fuzzing(client):
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/classify", json={"texts": ["京都の紅葉は最高"]}).json()["results"][0]["error"] is None
