"""``jpipe bench serve`` with wrk: the output parser on real wrk output, the Lua script, the client choice,
and (when wrk is installed) wrk against a loopback stdlib server and against a tiny ``jpipe serve``.

The fixtures are real wrk 4.1.0 output: ``wrk_classify_output.txt`` from ``jpipe bench serve`` on a
trained project (classify, 32 connections, 10 s), ``wrk_errors_output.txt`` from a test server that
answers every 10th request with 503 and breaks every 25th connection.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from pipeline.bench.wrk import JSON_MARK, find_wrk, lua_string, parse_wrk_output, run_wrk, write_script, wrk_script
from pipeline.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
needs_wrk = pytest.mark.skipif(find_wrk() is None, reason="wrk is not installed (`make install` apt-installs it when run as root)")


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------ the parser
def test_parse_real_classify_output():
    parsed = parse_wrk_output(fixture_text("wrk_classify_output.txt"))
    assert parsed["requests"] == 3488 and parsed["seconds"] == pytest.approx(10.02)
    assert parsed["requests_per_second"] == 348.08
    assert parsed["latency_ms"] == {"mean": 92.65, "max": 346.78, "p50": 83.75, "p75": 93.92, "p90": 115.12, "p99": 327.24}
    assert parsed["non_2xx"] == 0 and parsed["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    done = parsed["done"]
    assert done["requests"] == parsed["requests"] and done["errors"]["status"] == 0
    # the text summary (rounded to 10 µs) and the done() JSON (µs) agree
    for key in ("p50", "p90", "p99"):
        assert done["latency_us"][key] / 1000 == pytest.approx(parsed["latency_ms"][key], abs=0.01)


def test_parse_real_output_with_errors():
    parsed = parse_wrk_output(fixture_text("wrk_errors_output.txt"))
    assert parsed["requests"] == 187 and parsed["requests_per_second"] == 92.99
    assert parsed["non_2xx"] == 16 == parsed["done"]["errors"]["status"]
    assert parsed["socket_errors"] == {"connect": 0, "read": 7, "write": 0, "timeout": 0}
    assert parsed["done"]["errors"]["read"] == 7


def test_parse_time_units_and_missing_done_line():
    text = fixture_text("wrk_classify_output.txt")
    text = text.replace("327.24ms", "1.20s").replace("83.75ms", "950.00us")
    text = "\n".join(line for line in text.splitlines() if not line.startswith(JSON_MARK))
    parsed = parse_wrk_output(text)
    assert parsed["latency_ms"]["p99"] == 1200.0 and parsed["latency_ms"]["p50"] == 0.95 and parsed["done"] is None


def test_parse_rejects_text_without_a_summary():
    with pytest.raises(ValueError, match="not a wrk summary"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


# ------------------------------------------------------------------ the Lua script
def test_lua_string_escapes_and_keeps_utf8_bytes():
    literal = lua_string('京都は"最高"\\\n')
    assert literal.startswith('"') and literal.endswith('"')
    inner = literal[1:-1]
    assert '\\"最高\\"'.encode() in inner.encode("latin-1") and "\\092" not in inner
    assert inner.endswith("\\\\\\010") and "\n" not in inner
    assert inner.encode("latin-1").startswith("京都".encode())  # one character per byte: written back as UTF-8


def test_wrk_script_lists_every_request_and_prints_json_when_done(tmp_path):
    entries = [("/v1/classify", json.dumps({"texts": [text]}, ensure_ascii=False)) for text in ("ラーメン", "京都")]
    script = wrk_script(method="POST", requests=[*entries, ("/v1/similar?word=x", None)])
    assert script.count("/v1/classify") == 2 and "false" in script and "function request()" in script
    assert "function done(summary, latency, requests)" in script and "latency:percentile(99)" in script
    written = write_script(tmp_path / "s.lua", script).read_bytes()
    assert '{\\"texts\\": [\\"ラーメン\\"]}'.encode() in written
    with pytest.raises(ValueError):
        wrk_script(method="GET", requests=[])


def test_client_choice(monkeypatch):
    import pipeline.bench.wrk as wrk_module
    from pipeline.bench.serve import resolve_client

    monkeypatch.setattr(wrk_module, "find_wrk", lambda: "/usr/bin/wrk")
    assert resolve_client("auto") == ("wrk", "/usr/bin/wrk") and resolve_client("raw") == ("raw", None)
    monkeypatch.setattr(wrk_module, "find_wrk", lambda: None)
    assert resolve_client("auto") == ("raw", None)
    with pytest.raises(ConfigError) as missing:
        resolve_client("wrk")
    assert missing.value.code == "E110"
    with pytest.raises(ConfigError) as unknown:
        resolve_client("ab")
    assert unknown.value.code == "E109"


# ------------------------------------------------------------------ wrk itself
class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str | None]] = []

    def _answer(self, body: str | None) -> None:
        self.seen.append((self.command, self.path, body))
        code = 500 if len(self.seen) % 5 == 0 else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = self.headers.get("Content-Length")  # none on an entry without a body
        self._answer(self.rfile.read(int(length)).decode("utf-8") if length else None)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(None)

    def log_message(self, *args) -> None:
        pass


@needs_wrk
def test_wrk_sends_every_body_as_utf8_and_counts_errors(tmp_path):
    """wrk with the generated script against a loopback stdlib server for 1 s: bodies cycle, non-2xx are counted."""
    texts = ["京都の紅葉は最高", 'ラーメンが"美味しい"', "野球の試合\nに行く"]
    entries = [("/v1/classify", json.dumps({"texts": [text]}, ensure_ascii=False)) for text in texts] + [
        ("/v1/similar?word=%E4%BA%AC", None)
    ]
    script = write_script(tmp_path / "load.lua", wrk_script(method="POST", requests=entries))
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_wrk(wrk=find_wrk(), url=f"http://127.0.0.1:{server.server_address[1]}/", script=script, connections=2, seconds=1)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    seen = list(_Recorder.seen)
    assert result["requests"] >= 8 and result["requests"] <= len(seen)
    bodies = {json.loads(body)["texts"][0] for method, path, body in seen if path == "/v1/classify"}
    assert bodies == set(texts)
    assert any(path == "/v1/similar?word=%E4%BA%AC" and body is None for _, path, body in seen)
    assert result["non_2xx"] == result["done"]["errors"]["status"] >= 1
    assert result["done"]["requests"] == result["requests"] and result["client_cpu_seconds"] >= 0
    with pytest.raises(ValueError, match="127.0.0.1"):
        run_wrk(wrk=find_wrk(), url="http://example.org/", script=script, connections=1, seconds=1)


@needs_wrk
def test_bench_serve_with_wrk_on_a_tiny_server(tmp_path):
    """The whole benchmark with wrk, 1 s per endpoint, on a tiny trained project; it writes nothing into the project."""
    pytest.importorskip("torch")
    pytest.importorskip("fastapi")
    from pipeline.bench.serve import benchmark_serve, format_report
    from tests.unit.test_serve import build_served_project

    project = build_served_project(tmp_path / "proj")
    before = sorted((p.relative_to(project), p.stat().st_mtime_ns) for p in project.rglob("*") if p.is_file())
    result = benchmark_serve(project_dir=project, client="auto", seconds=1.0, offline_reviews=50, overrides=["serve.max_wait_ms=1"])
    after = sorted((p.relative_to(project), p.stat().st_mtime_ns) for p in project.rglob("*") if p.is_file())
    assert after == before
    assert result["client"] == "wrk" and result["classify"]["wrk"]["command"].startswith(find_wrk())
    for name in ("classify", "similar"):
        row = result[name]
        assert row["requests"] > 0 and row["errors"] == 0 and row["p50_ms"] <= row["p99_ms"]
        assert row["cpu_seconds"]["server"] > 0 and row["cpu_seconds"]["client"] >= 0
    assert result["classify"]["batching"]["requests"] >= result["classify"]["requests"]
    assert result["goals"]["classify_throughput_ratio"]["value"] > 0 and result["load_average"]["before"]
    report = format_report(result)
    assert "load client wrk" in report and "served / offline" in report and "load average" in report
