"""wrk, a native HTTP load generator, as the client of ``jpipe bench serve``.

wrk (the Debian package ``wrk``; ``make install`` apt-installs it) holds ``connections``
keep-alive connections open from ``threads`` threads. Each connection sends its next
request when the previous answer arrived (a closed loop, like the Python clients), for
``seconds`` seconds. It costs far less CPU per request than a Python client, and on a
small machine the load generator's CPU is taken from the server under test.

The requests come from a Lua script (``wrk -s``) written here: request *i* of a thread is
entry ``i mod n`` of a list of (path, body) pairs, so the texts vary per request; each
thread starts at its own offset. Its ``done`` function prints one line of JSON (requests,
duration, socket errors, responses with a status >= 400, latency percentiles); the text
summary of ``--latency`` (requests/s, the latency distribution, "Non-2xx or 3xx responses")
is parsed as well, and the two must agree.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

JSON_MARK = "JPIPE_WRK_JSON "
REQUEST_TIMEOUT_S = 10
EXIT_GRACE_S = 60.0
_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"

_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d}}\\n',
    mark, summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def find_wrk() -> str | None:
    """The path of the ``wrk`` executable, or None."""
    return shutil.which("wrk")


def lua_string(value: str) -> str:
    """``value`` as a double-quoted Lua string literal of its UTF-8 bytes (quotes, backslashes and control bytes escaped)."""
    out = []
    for byte in value.encode("utf-8"):
        if byte in (34, 92):
            out.append("\\" + chr(byte))
        elif byte < 32 or byte == 127:
            out.append(f"\\{byte:03d}")
        else:
            out.append(chr(byte) if byte < 128 else bytes([byte]).decode("latin-1"))
    return '"' + "".join(out) + '"'


def wrk_script(*, method: str, requests: list[tuple[str, str | None]], content_type: str = "application/json") -> str:
    """Lua for ``wrk -s``: request *i* of a thread is ``requests[(offset + i) % n]`` = (path with query, body or None).

    The script is text whose non-ASCII characters stand for single bytes (latin-1): write it
    with :func:`write_script`, which writes those bytes back, so a body reaches the server as UTF-8.
    """
    if not requests:
        raise ValueError("wrk_script needs at least one request")
    paths = ",\n  ".join(lua_string(path) for path, _ in requests)
    bodies = ",\n  ".join(lua_string(body) if body is not None else "false" for _, body in requests)
    return f"""-- written by `jpipe bench serve`: {len(requests)} requests, cycled per wrk thread
local paths = {{
  {paths}
}}
local bodies = {{
  {bodies}
}}
local method = {lua_string(method)}
local headers = {{["Content-Type"] = {lua_string(content_type)}}}
local counter = 0
local started = 0
mark = {lua_string(JSON_MARK)}

function setup(thread)
  thread:set("offset", started * 7919)
  started = started + 1
end

function init(args)
  counter = tonumber(offset) or 0
end

function request()
  local i = (counter % #paths) + 1
  counter = counter + 1
  local body = bodies[i]
  if body == false then body = nil end
  return wrk.format(method, paths[i], headers, body)
end
{_DONE}"""


def write_script(path: Path, script: str) -> Path:
    """Write a :func:`wrk_script` text as bytes (each character is one byte)."""
    path.write_bytes(script.encode("latin-1"))
    return path


def _milliseconds(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_wrk_output(text: str) -> dict[str, Any]:
    """Figures from wrk's ``--latency`` output (and the ``done`` JSON line when there is one).

    Keys: requests, seconds, requests_per_second, latency_ms (p50/p75/p90/p99 of the distribution,
    mean and max of the thread stats), non_2xx, socket_errors, done (the JSON or None).
    ValueError when the summary lines are missing (wrk failed).
    """
    summary = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),", text, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.MULTILINE)
    if summary is None or rate is None:
        raise ValueError(f"not a wrk summary:\n{text[-2000:]}")
    latency: dict[str, float] = {}
    stats = re.search(rf"^\s*Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}", text, re.MULTILINE)
    if stats:
        latency["mean"] = _milliseconds(stats.group(1), stats.group(2))
        latency["max"] = _milliseconds(stats.group(5), stats.group(6))
    for share, value, unit in re.findall(rf"^\s*(\d+)%\s+{_TIME}\s*$", text, re.MULTILINE):
        latency[f"p{share}"] = _milliseconds(value, unit)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    done_line = next((line for line in text.splitlines() if line.startswith(JSON_MARK)), None)
    return {
        "requests": int(summary.group(1)),
        "seconds": _milliseconds(summary.group(2), summary.group(3)) / 1000.0,
        "requests_per_second": float(rate.group(1)),
        "latency_ms": {key: round(value, 3) for key, value in latency.items()},
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True))
        if sockets
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "done": json.loads(done_line[len(JSON_MARK) :]) if done_line else None,
    }


def run_wrk(
    *, wrk: str, url: str, script: Path, connections: int, seconds: float, threads: int = 1, timeout_s: int = REQUEST_TIMEOUT_S
) -> dict[str, Any]:
    """Run wrk once against ``url`` (127.0.0.1 only) for ``seconds``; the parsed output plus wrk's own CPU seconds.

    The CPU is ``RUSAGE_CHILDREN`` (user + system) before and after wrk is reaped: the server,
    the other child, is reaped only when it stops. wrk ends itself after ``-d``; it is killed
    if it has not ended ``EXIT_GRACE_S`` later.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"wrk runs against 127.0.0.1 only, not {url}")
    duration = max(1, round(seconds))
    command = [wrk, "-t", str(threads), "-c", str(max(connections, threads)), "-d", f"{duration}s"]
    command += ["--timeout", f"{timeout_s}s", "--latency", "-s", str(script), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        output, _ = process.communicate(timeout=duration + EXIT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate(timeout=10)
        raise RuntimeError(f"wrk did not end {EXIT_GRACE_S:.0f} s after its {duration} s run") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = output.decode("utf-8", errors="replace")
    logger.debug("wrk output:\n%s", text)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with status {process.returncode}:\n{text[-2000:]}")
    result = parse_wrk_output(text)
    result["client_cpu_seconds"] = round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3)
    result["command"] = " ".join(command[:-3] + ["-s", "script.lua", url])
    return result
