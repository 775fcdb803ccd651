"""``jpipe bench serve``: a local ``jpipe serve`` under concurrent load, beside offline batch classify.

The server runs as a subprocess (``python -m pipeline serve``) on 127.0.0.1 and a free
port. The load comes from ``wrk`` (a native load generator, :mod:`.wrk`; ``client="auto"``
takes it when it is installed) or from Python clients (``httpx``, ``raw``). Every client
sends its next request when the previous answer arrived (a closed loop); wrk runs
``seconds`` seconds per endpoint, the Python clients at most ``requests`` requests and
``seconds`` seconds:

* classify: ``clients`` clients, one review per request (KNBC test sentences);
* similar: ``similar_clients`` clients, one word of the vector vocabulary per request.

Then the server is stopped (SIGTERM: graceful) and the same reviews are classified
offline in this process (``TaskClassifiers.classify``: ``Classifier.predict`` per task on
batches of 256, the same models and torch threads) for the throughput ratio. The
server's RSS is sampled every second; start = after the warm-up requests. The CPU seconds
of the server (its process tree) and of the load client are measured per endpoint, and the
load average is read before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
WARM_UP_REQUESTS = 200
OFFLINE_BATCH = 256
# Goals of issue #13 (2 cores, CPU).
CLIENTS = ("auto", "wrk", "httpx", "raw")
GOALS = {"classify_ratio": 0.7, "classify_p99_ms": 150.0, "similar_p99_ms": 10.0, "rss_growth": 0.10}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc``): uvicorn's worker processes with ``--workers N``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def tree_rss_mb(pid: int) -> float | None:
    """RSS of ``pid`` and its descendants, in MB."""
    values = [value for member in process_tree(pid) if (value := process_rss_mb(member)) is not None]
    return round(sum(values), 1) if values else None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` and its living descendants."""
    values = [value for member in process_tree(pid) if (value := process_cpu_seconds(member)) is not None]
    return sum(values) if values else None


def load_average() -> str | None:
    """The first three fields of ``/proc/loadavg`` (1, 5, 15 minutes)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text(encoding="ascii").split()[:3])
    except OSError:
        return None


def process_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class ServerProcess:
    """``python -m pipeline serve`` on 127.0.0.1:``port``; stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, *, project_dir: Path, port: int, overrides: list[str], log_path: Path, workers: int = 1) -> None:
        command = [sys.executable, "-m", "pipeline", "--dir", str(project_dir), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        for override in overrides:
            command += ["--set", override]
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until ``/readyz`` answers 200; RuntimeError with the server log when it exits or times out."""
        import httpx

        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop(self) -> float | None:
        """SIGTERM (graceful), SIGKILL after ``STOP_TIMEOUT_S``; returns the seconds the graceful stop took."""
        started = time.perf_counter()
        seconds = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
                seconds = time.perf_counter() - started
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return seconds


def _percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(share * len(sorted_values))))
    return sorted_values[rank - 1]


def summarize(latencies: list[float], *, errors: int, seconds: float, clients: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    milliseconds = [value * 1000 for value in ordered]
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(latencies) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(_percentile(milliseconds, 0.50), 2),
        "p90_ms": round(_percentile(milliseconds, 0.90), 2),
        "p99_ms": round(_percentile(milliseconds, 0.99), 2),
        "max_ms": round(milliseconds[-1], 2) if milliseconds else None,
    }


async def run_load(
    *,
    url: str,
    make_request: Callable[[int], tuple[str, str, dict]],
    clients: int,
    requests: int,
    seconds: float,
    client: str = "httpx",
) -> dict[str, Any]:
    """``clients`` closed-loop clients until ``requests`` requests were sent or ``seconds`` passed; latency summary.

    ``client="httpx"``: each client is its own ``httpx.AsyncClient`` with one keep-alive connection
    (one pool shared by 32 clients costs ~2.5 ms of CPU per request in httpx's pool bookkeeping, 4x
    more). ``client="raw"``: a minimal HTTP/1.1 keep-alive client on asyncio streams, ~10x less CPU
    per request than httpx: on 2 cores the load generator's CPU is taken from the server under test.
    """
    state = {"sent": 0, "errors": 0}
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    one_client = _httpx_client if client == "httpx" else _raw_client

    async def loop(send: Callable) -> None:
        while state["sent"] < requests and time.perf_counter() < deadline:
            method, path, options = make_request(state["sent"])
            state["sent"] += 1
            begin = time.perf_counter()
            if await send(method, path, options):
                latencies.append(time.perf_counter() - begin)
            else:
                state["errors"] += 1

    await asyncio.gather(*(one_client(url, loop) for _ in range(clients)))
    return summarize(latencies, errors=state["errors"], seconds=time.perf_counter() - started, clients=clients)


async def _httpx_client(url: str, loop: Callable) -> None:
    import httpx

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0, trust_env=False) as client:

        async def send(method: str, path: str, options: dict) -> bool:
            try:
                return (await client.request(method, path, **options)).status_code == 200
            except httpx.HTTPError:
                return False

        await loop(send)


async def _raw_client(url: str, loop: Callable) -> None:
    """One keep-alive HTTP/1.1 connection; requests with a JSON body or query parameters, answers with Content-Length."""
    import json
    from urllib.parse import urlencode, urlsplit

    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    host = f"{parts.hostname}:{parts.port}".encode()

    async def send(method: str, path: str, options: dict) -> bool:
        body = json.dumps(options["json"]).encode() if "json" in options else b""
        params = {k: v for k, v in options.get("params", {}).items() if v is not None}
        target = (path + ("?" + urlencode(params) if params else "")).encode()
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), target, host)
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        writer.write(head + b"\r\n" + body)
        try:
            header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60.0)
            lines = header.split(b"\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, StopIteration, ValueError):
            return False
        return lines[0].split(b" ", 2)[1] == b"200"

    try:
        await loop(send)
    finally:
        writer.close()


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread, while in use as a context manager."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        import threading

        self.pid = pid
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jpipe-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = tree_rss_mb(self.pid)
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _similar_words(project_dir: Path, source: str, count: int = 1000) -> list[str]:
    """Frequent words of the vector vocabulary (every 2nd of the most frequent ``2 * count``), keys the server resolves directly."""
    from pipeline.vectors import Vectors

    words = Vectors.from_project(project_dir=project_dir, source=source).index.words
    chosen = [word for word in words[10 : 10 + 2 * count : 2] if word.strip()]
    return chosen or list(words[:count])


def offline_throughput(*, project_dir: Path, texts: list[str], reviews: int, tasks: list[str], threads: int) -> dict[str, Any]:
    """Reviews/s of ``TaskClassifiers.classify`` (tokenize, then ``predict_tokens`` per task) on batches of 256."""
    from pipeline.inference.batch import TaskClassifiers
    from pipeline.serve.registry import set_torch_threads

    chosen = set_torch_threads(threads)
    classifiers = TaskClassifiers.from_project(project_dir, tasks=tasks, device="cpu")
    sample = [texts[i % len(texts)] for i in range(reviews)]
    classifiers.classify(sample[:OFFLINE_BATCH])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(sample), OFFLINE_BATCH):
        classifiers.classify(sample[start : start + OFFLINE_BATCH])
    seconds = time.perf_counter() - started
    return {"reviews": reviews, "seconds": round(seconds, 2), "reviews_per_second": round(reviews / seconds, 1), "torch_threads": chosen}


def _requests(texts: list[str], words: list[str], source: str | None) -> dict[str, Callable[[int], tuple[str, str, dict]]]:
    def classify(index: int) -> tuple[str, str, dict]:
        return "POST", "/v1/classify", {"json": {"texts": [texts[index % len(texts)]]}}

    def similar(index: int) -> tuple[str, str, dict]:
        return "GET", "/v1/similar", {"params": {"word": words[index % len(words)], "topn": 10, "source": source}}

    return {"classify": classify, "similar": similar}


def _server_json(url: str, path: str) -> dict[str, Any]:
    import httpx

    return httpx.get(url + path, timeout=10.0).json()


@contextlib.contextmanager
def _running_server(project_dir: Path, overrides: list[str], workers: int = 1) -> Iterator[tuple[ServerProcess, float]]:
    with tempfile.TemporaryDirectory(prefix="jpipe-bench-serve-") as tmp:
        log_path = Path(tmp) / "server.log"
        server = ServerProcess(project_dir=project_dir, port=free_port(), overrides=overrides, log_path=log_path, workers=workers)
        try:
            ready = server.wait_ready()
            yield server, ready
        finally:
            server.stop()


def _wrk_phase(
    url: str, *, name: str, texts: list[str], words: list[str], source: str | None, plan: dict, directory: Path
) -> tuple[dict, float]:
    """One endpoint under wrk: the latency row (as :func:`summarize` gives) and wrk's CPU seconds."""
    import json
    from urllib.parse import urlencode

    from pipeline.bench.wrk import run_wrk, write_script, wrk_script

    if name == "classify":
        method, entries = "POST", [("/v1/classify", json.dumps({"texts": [text]}, ensure_ascii=False)) for text in texts]
        clients = plan["clients"]
    else:
        query = {"topn": 10, **({"source": source} if source else {})}
        method, entries = "GET", [("/v1/similar?" + urlencode({"word": word, **query}), None) for word in words]
        clients = plan["similar_clients"]
    script = write_script(directory / f"{name}.lua", wrk_script(method=method, requests=entries))
    run = run_wrk(wrk=plan["wrk"], url=url + "/", script=script, connections=clients, seconds=plan["seconds"])
    latency = run["latency_ms"]
    row = {
        "clients": clients,
        "requests": run["requests"],
        "errors": run["non_2xx"] + sum(run["socket_errors"].values()),
        "seconds": round(run["seconds"], 2),
        "requests_per_second": run["requests_per_second"],
        **{f"{key}_ms": latency.get(key) for key in ("p50", "p90", "p99", "max")},
        "wrk": {key: run[key] for key in ("command", "non_2xx", "socket_errors", "done")},
    }
    return row, run["client_cpu_seconds"]


def _one_phase(server: ServerProcess, name: str, *, makers: dict, plan: dict, wrk_inputs: dict, directory: Path) -> dict[str, Any]:
    """One endpoint under load, with the CPU seconds of the server (process tree) and of the client meanwhile."""
    cpu_start = tree_cpu_seconds(server.pid)
    if plan["client"] == "wrk":
        row, client_cpu = _wrk_phase(server.url, name=name, plan=plan, directory=directory, **wrk_inputs)
    else:
        clients = plan["clients"] if name == "classify" else plan["similar_clients"]
        options = dict(clients=clients, requests=plan["requests"], seconds=plan["seconds"], client=plan["client"])
        client_start = time.process_time()
        row = asyncio.run(run_load(url=server.url, make_request=makers[name], **options))
        client_cpu = time.process_time() - client_start
    cpu_end = tree_cpu_seconds(server.pid)
    server_cpu = round(cpu_end - cpu_start, 2) if cpu_start is not None and cpu_end is not None else None
    row["cpu_seconds"] = {"server": server_cpu, "client": round(client_cpu, 2)}
    if name == "classify":
        row["batching"] = _server_json(server.url, "/v1/stats")["classify"]
    return row


def _load_phases(server: ServerProcess, *, texts: list[str], plan: dict[str, Any]) -> dict[str, Any]:
    """Warm-up, then classify and similar under load; RSS, CPU, batching counters of the server, load average."""
    models = _server_json(server.url, "/v1/models")
    source = models["vector_sources"][0] if models["vector_sources"] else None
    words = _similar_words(server_project(models), source) if source else []
    makers = _requests(texts, words, source)
    phases = [name for name in ("classify", "similar") if (name == "classify" and models["tasks"]) or (name == "similar" and source)]
    warm_client = "raw" if plan["client"] == "wrk" else plan["client"]
    for name in phases:  # warm-up
        asyncio.run(
            run_load(url=server.url, make_request=makers[name], clients=4, requests=WARM_UP_REQUESTS, seconds=30.0, client=warm_client)
        )
    results: dict[str, Any] = {"load_average": {"before": load_average()}}
    rss_start = tree_rss_mb(server.pid)
    wrk_inputs = {"texts": texts, "words": words, "source": source}
    with RssSampler(server.pid) as sampler, tempfile.TemporaryDirectory(prefix="jpipe-bench-wrk-") as tmp:
        for name in phases:
            results[name] = _one_phase(server, name, makers=makers, plan=plan, wrk_inputs=wrk_inputs, directory=Path(tmp))
    results["load_average"]["after_load"] = load_average()
    rss_end = tree_rss_mb(server.pid)
    results["rss_mb"] = {"start": rss_start, "end": rss_end, "max": max(sampler.samples, default=None), "samples": len(sampler.samples)}
    spent = [results[name]["cpu_seconds"] for name in phases]
    server_cpu = [entry["server"] for entry in spent]
    results["cpu_seconds"] = {
        "server": round(sum(server_cpu), 2) if None not in server_cpu else None,
        "clients": round(sum(entry["client"] for entry in spent), 2),
    }
    results["tasks"] = models["tasks"]
    results["source"] = source
    return results


def server_project(models: dict[str, Any]) -> Path:
    return Path(models["project"])


def benchmark_serve(
    *,
    project_dir: str | os.PathLike,
    clients: int = 32,
    similar_clients: int = 4,
    requests: int = 4000,
    seconds: float = 30.0,
    offline_reviews: int = 4000,
    overrides: list[str] | None = None,
    client: str = "auto",
    server_workers: int = 1,
) -> dict[str, Any]:
    """Run the server benchmark (see the module docstring); one JSON-able dict with the goals beside the numbers.

    ``client``: ``wrk``, ``httpx`` or ``raw`` (:data:`CLIENTS`); ``auto`` is wrk when it is installed, else raw.
    ``server_workers``: ``jpipe serve --workers`` (uvicorn processes, each with its own models and batcher).
    """
    from pipeline.bench.classify import benchmark_texts
    from pipeline.serve.server import serve_limits

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    project = Path(project_dir).resolve()
    overrides = list(overrides or [])
    limits = serve_limits(project, overrides)
    texts, text_source = benchmark_texts(project)
    client, wrk = resolve_client(client)
    plan = {"clients": clients, "similar_clients": similar_clients, "requests": requests, "seconds": seconds, "client": client, "wrk": wrk}
    started = time.perf_counter()
    with _running_server(project, overrides, server_workers) as (server, ready_seconds):
        rss_loaded = tree_rss_mb(server.pid)
        results = _load_phases(server, texts=texts, plan=plan)
        stop_started = time.perf_counter()
    results["rss_mb"]["loaded"] = rss_loaded
    results["stop_seconds"] = round(time.perf_counter() - stop_started, 2)
    results["ready_seconds"] = round(ready_seconds, 2)
    if results["tasks"]:
        results["offline_classify"] = offline_throughput(
            project_dir=project, texts=texts, reviews=offline_reviews, tasks=results["tasks"], threads=limits["torch_threads"]
        )
    results["load_average"]["after"] = load_average()
    results.update(
        texts=text_source,
        client=client,
        mean_characters=round(sum(len(t) for t in texts) / len(texts), 1),
        serve_settings={key: limits[key] for key in ("max_batch_size", "max_wait_ms", "torch_threads")},
        server_workers=server_workers,
        cpu_count=os.cpu_count(),
        total_seconds=round(time.perf_counter() - started, 1),
    )
    results["goals"] = check_goals(results)
    return results


def resolve_client(client: str) -> tuple[str, str | None]:
    """The load client to use and the wrk executable (None for the Python clients); ``auto`` = wrk when found, else raw."""
    from pipeline.bench.wrk import find_wrk

    if client not in CLIENTS:
        raise ConfigError("E109", f"Unknown load client '{client}'.", hint=f"Valid clients: {', '.join(CLIENTS)}.")
    wrk = find_wrk() if client in ("auto", "wrk") else None
    if client == "wrk" and wrk is None:
        raise ConfigError(
            "E110", "The load client wrk is not installed.", hint="Install it: apt-get install wrk (`make install` does it as root)."
        )
    if client == "auto":
        return ("wrk", wrk) if wrk else ("raw", None)
    return client, wrk


def check_goals(results: dict[str, Any]) -> dict[str, Any]:
    """Each goal of issue #13 with the measured value and whether it is met."""
    goals: dict[str, Any] = {}
    classify, offline = results.get("classify"), results.get("offline_classify")
    if classify and offline:
        ratio = classify["requests_per_second"] / offline["reviews_per_second"]
        goals["classify_throughput_ratio"] = {
            "value": round(ratio, 3),
            "goal": f">= {GOALS['classify_ratio']}",
            "met": ratio >= GOALS["classify_ratio"],
        }
        goals["classify_p99_ms"] = {
            "value": classify["p99_ms"],
            "goal": f"<= {GOALS['classify_p99_ms']:g}",
            "met": classify["p99_ms"] <= GOALS["classify_p99_ms"],
        }
    if results.get("similar"):
        p99 = results["similar"]["p99_ms"]
        goals["similar_p99_ms"] = {"value": p99, "goal": f"<= {GOALS['similar_p99_ms']:g}", "met": p99 <= GOALS["similar_p99_ms"]}
    rss = results["rss_mb"]
    if rss.get("start") and rss.get("end"):
        growth = rss["end"] / rss["start"] - 1
        goals["rss_growth"] = {"value": round(growth, 4), "goal": f"<= {GOALS['rss_growth']:.0%}", "met": growth <= GOALS["rss_growth"]}
    return goals


def _endpoint_lines(result: dict[str, Any]) -> list[str]:
    head = f"{'endpoint':<10} {'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
    lines = [head + f" {'server CPU s':>12} {'client CPU s':>12}"]
    for name in ("classify", "similar"):
        if name in result:
            row = result[name]
            cpu = row.get("cpu_seconds", {})
            p90 = row.get("p90_ms")
            lines.append(
                f"{name:<10} {row['clients']:>7} {row['requests']:>8} {row['errors']:>6} {row['requests_per_second']:>8.1f}"
                f" {row['p50_ms']:>8.2f} {p90 if p90 is not None else float('nan'):>8.2f} {row['p99_ms']:>8.2f}"
                f" {cpu.get('server', '')!s:>12} {cpu.get('client', '')!s:>12}"
            )
    return lines


def format_report(result: dict[str, Any]) -> str:
    """The benchmark as a text table (``--json`` prints the dict)."""
    client = result.get("client", "httpx")
    command = result.get("classify", {}).get("wrk", {}).get("command")
    lines = [
        f"server ready in {result['ready_seconds']} s; {result['cpu_count']} cores; load client {client}"
        + (f" ({command})" if command else "")
        + f"; server workers {result.get('server_workers', 1)}; serve settings {result['serve_settings']}"
    ]
    if result.get("load_average"):
        load = result["load_average"]
        lines.append(
            f"load average (1/5/15 min): before {load.get('before')}; after the load {load.get('after_load')}; after offline {load.get('after')}"
        )
    lines += _endpoint_lines(result)
    if "offline_classify" in result:
        offline = result["offline_classify"]
        ratio = result.get("goals", {}).get("classify_throughput_ratio", {}).get("value")
        lines.append(
            f"offline classify (batches of {OFFLINE_BATCH}): {offline['reviews_per_second']:.1f} reviews/s ({offline['reviews']} reviews)"
            + (f"; served / offline = {ratio}" if ratio is not None else "")
        )
    if "classify" in result and "batching" in result["classify"]:
        batching = result["classify"]["batching"]
        lines.append(
            f"classify batches: mean {batching['mean_batch_texts']} texts, max {batching['max_batch_texts']} ({batching['batches']} batches)"
        )
    rss = result["rss_mb"]
    lines.append(f"server RSS: loaded {rss['loaded']} MB, start {rss['start']} MB, end {rss['end']} MB, max {rss['max']} MB")
    lines.append(f"CPU seconds during the load: server {result['cpu_seconds']['server']}, client {result['cpu_seconds']['clients']}")
    for name, goal in result["goals"].items():
        lines.append(f"goal {name}: {goal['value']} (goal {goal['goal']}) {'met' if goal['met'] else 'MISSED'}")
    return "\n".join(lines)
