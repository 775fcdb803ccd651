"""``jpipe classify --engine ray``: batch classification on Ray Data, local or on a cluster.

The input is cut into *parts*: byte ranges of a txt/JSONL file (cut at line starts, each knowing
its first line number), the row groups of a parquet file; a CSV/TSV or gzip file is one part.
Each part is read by ``pipeline.data.readers`` as the local engine reads it, so ids and per-row
errors are the same, and every row gets ``seq``, its 0-based position in the input.

``ray.data.from_items(parts).map_batches(ClassifyActor, compute=ActorPoolStrategy(size=N))``:
an actor loads the task models once, then for each part it is given reads the part, classifies
its rows ``SHARD_ROWS`` at a time (``classify_batch``, the local engine's code) and writes each
such chunk as one shard, ``part-<first seq>.jsonl`` or ``.parquet``, atomically. A retried part
rewrites the same shard names, so no row is written twice; rows carry ``seq``: sort by it to get
the input order back. An input read whole (one part) is streamed by a read task to the actors
instead. Reading next to the models keeps the rows out of Ray's object store: the only data
that travels are part descriptions and per-shard counts, so memory does not grow with the input.

The shards go to a staging directory next to the output directory, which replaces the output
directory only when every shard is written: a failed run leaves no half-written output.

Ray restarts an actor that dies (``max_restarts=-1``) and retries its batch
(``max_task_retries=-1``): Ray Data's defaults for actor pools. On a cluster every worker
needs jpipe installed and must see the input file, the model directories and the output
directory at the same paths (shared storage).

``ray`` is imported inside the functions: ``import pipeline.inference.ray_engine`` is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.errors import ConfigError, InputError
from pipeline.inference.batch import DEFAULT_TOP_TOKENS, ClassifySummary
from pipeline.io import replace_dir

logger = logging.getLogger(__name__)

RAY_OUTPUT_FORMATS = ("jsonl", "parquet")
READ_BLOCK_ROWS = 4096  # rows per block produced by a read part
PART_BYTES = 64 << 20  # a txt/JSONL input is read in parts of about this size (and at least 4 per actor)
SHARD_ROWS = 8192  # output rows per shard (at most): an actor classifies and writes this many at a time
CONNECT_TIMEOUT_S = 5.0  # an --address that does not answer within this is an error
DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray Client, GCS
# Test hook: an actor that finds this variable set (to a marker file that does not exist yet)
# creates the marker and dies in the middle of its first batch, so tests can watch Ray retry it.
CRASH_ONCE_ENV = "JPIPE_RAY_CRASH_ONCE"


@dataclass(frozen=True)
class RaySource:
    """The input, as ``read_records`` takes it."""

    path: str
    kind: str  # txt, csv, tsv, jsonl or parquet
    text_column: str = "text"
    id_column: str | None = None
    max_chars: int = 10_000


@dataclass(frozen=True)
class RayModels:
    """The task models (task -> model directory) and how each actor runs them."""

    model_dirs: dict[str, str]
    batch_size: int = 256
    device: str = "cpu"
    long_policy: str = "aggregate"
    int8: bool = False
    threads: int = 1  # torch threads per actor
    top_tokens: int = DEFAULT_TOP_TOKENS
    calibrated: bool = True  # the models' dev-fitted temperatures (calibration.json)


@dataclass
class RaySummary(ClassifySummary):
    """``ClassifySummary`` plus the shards written and the Ray figures."""

    shards: list[str] = field(default_factory=list)
    actors: int = 0
    seconds: float = 0.0
    connect_seconds: float = 0.0


def ray_output_format(explicit: str | None) -> str:
    """The shard format: ``explicit`` (jsonl or parquet), else jsonl."""
    chosen = explicit or "jsonl"
    if chosen not in RAY_OUTPUT_FORMATS:
        raise ConfigError("E109", f"The Ray engine writes jsonl or parquet shards, not {chosen}.", hint="Use jsonl or parquet.")
    return chosen


# ---------------------------------------------------------------- connect
def check_address(address: str, *, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast (E142) when ``address`` (``host:port`` or ``ray://host:port``) does not accept a connection."""
    parsed = urlparse(address if "://" in address else f"//{address}")
    host, port = parsed.hostname, parsed.port or DEFAULT_PORTS.get(parsed.scheme, 6379)
    if not host:
        raise ConfigError("E142", f"Cannot read a host from the Ray address {address!r}.", hint="Use auto, HOST:PORT or ray://HOST:PORT.")
    hint = "Check that the cluster runs (`ray status` on its head node) and that this machine can reach that port."
    try:
        answer = _http2_settings(host, port, timeout=timeout)
    except OSError as exc:  # refused, unreachable, no answer in time (socket.timeout is an OSError)
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ConfigError("E142", f"The Ray cluster at {address} cannot be reached ({host}:{port}: {reason}).", hint=hint) from exc
    if not answer:
        raise ConfigError("E142", f"{host}:{port} answers, but not as a Ray cluster (no gRPC).", hint=hint)


def _http2_settings(host: str, port: int, *, timeout: float) -> bool:
    """Whether ``host:port`` speaks HTTP/2 (gRPC: Ray's GCS and Ray Client servers): send the client
    preface and an empty SETTINGS frame, expect a SETTINGS frame back. A port that accepts the
    connection and then says nothing would make ``ray.init`` wait for minutes."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type 4, stream 0
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as connection:
        connection.sendall(preface)
        header = b""
        while len(header) < 9:  # the frame header: 3 bytes length, 1 type, 1 flags, 4 stream id
            connection.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = connection.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    return header[3] == 4


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``), or start a local Ray
    when it is None. Returns whether this call started Ray (and so should shut it down)."""
    if address not in (None, "auto"):
        check_address(address)
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = dict(logging_level=logging.WARNING, include_dashboard=False)
    if address is None:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **options)
        return True
    try:
        ray.init(address=address, **options)
    except ValueError as exc:  # ray:// without the Ray Client package
        raise ConfigError("E110", f"Could not join the Ray cluster at {address}: {exc}", hint="pip install 'ray[client]'.") from exc
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise ConfigError(
            "E142",
            f"Could not join the Ray cluster at {address}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.",
            hint="Start one on its head node with `ray start` (address auto finds a cluster started on this machine), or give its address.",
        ) from exc
    return True


# ---------------------------------------------------------------- read
def read_parts(source: RaySource, *, parts: int) -> list[dict[str, Any]]:
    """The parts the input is read in: ``{"start", "end", "first"}`` per part (byte range / row group)."""
    from pipeline.data.readers import line_ranges, parquet_row_groups

    if source.path == "-":
        raise InputError("E205", "The Ray engine cannot read standard input.", hint="Save the reviews to a file and classify the file.")
    if not Path(source.path).is_file():
        raise InputError("E205", f"Input file {source.path} does not exist.", hint="Give a .txt, .csv, .tsv, .jsonl or .parquet file.")
    if source.kind == "parquet":
        return [{"start": group, "end": -1, "first": first} for group, first in parquet_row_groups(source.path)]
    if source.kind in ("txt", "jsonl") and not source.path.endswith(".gz"):
        wanted = max(parts, -(-Path(source.path).stat().st_size // PART_BYTES))
        return [{"start": start, "end": end, "first": first} for start, end, first in line_ranges(source.path, wanted)]
    return [{"start": -1, "end": -1, "first": 1}]  # read whole, in one task


def _part_records(source: RaySource, part: dict[str, Any]):
    from pipeline.data import readers

    options = dict(text_column=source.text_column, id_column=source.id_column, max_chars=source.max_chars)
    if source.kind == "parquet":
        return readers.read_parquet_records(source.path, row_groups=(int(part["start"]), int(part["first"])), **options)
    if int(part["start"]) >= 0:
        return readers.read_line_range(
            source.path, input_format=source.kind, start=int(part["start"]), end=int(part["end"]), first_line=int(part["first"]), **options
        )
    return readers.read_records(source.path, input_format=source.kind, **options)


def read_part(batch: dict[str, Any], *, source: RaySource) -> Iterator[dict[str, list]]:
    """``map_batches`` function (inputs read whole): read the parts of ``batch``, yield their records in blocks, with ``seq``."""
    for start, end, first in zip(batch["start"], batch["end"], batch["first"], strict=True):
        for chunk in _chunks(source, {"start": start, "end": end, "first": first}, READ_BLOCK_ROWS):
            yield _record_table(chunk)


def _chunks(source: RaySource, part: dict[str, Any], size: int) -> Iterator[list[tuple[int, Any]]]:
    """The records of one part as lists of ``(seq, record)``, ``size`` at a time (parts start at row/line ``first``)."""
    chunk: list[tuple[int, Any]] = []
    for seq, record in enumerate(_part_records(source, part), start=int(part["first"]) - 1):
        chunk.append((seq, record))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _record_table(chunk: list[tuple[int, Any]]):
    import pyarrow as pa

    schema = pa.schema([("seq", pa.int64()), ("id", pa.string()), ("text", pa.string()), ("error", pa.string())])
    columns = {"seq": [seq for seq, _ in chunk], **{key: [getattr(r, key) for _, r in chunk] for key in ("id", "text", "error")}}
    return pa.Table.from_pydict(columns, schema=schema)


# ---------------------------------------------------------------- classify and write
class ClassifyActor:
    """Loads the task models once. Each call gets either parts of the input (it reads them) or records
    (read by ``read_part``); it classifies them (``classify_batch``) and writes each ``SHARD_ROWS`` rows
    as one shard. Returns one count row per shard."""

    def __init__(
        self, *, models: RayModels, source: RaySource, directory: str, output_format: str, crash_marker: str | None = None
    ) -> None:
        from pipeline.inference.batch import TaskClassifiers

        self.classifiers = TaskClassifiers.from_engine_models(models)
        self.top_tokens = models.top_tokens
        self.source, self.directory, self.output_format = source, directory, output_format
        self.crash_marker = crash_marker

    def __call__(self, batch) -> dict[str, list]:
        from pipeline.data.readers import InputRecord

        data = batch.to_pydict()
        if "start" in data:  # parts of a splittable input: read here, next to the models
            parts = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
            chunks = (chunk for part in parts for chunk in _chunks(self.source, part, SHARD_ROWS))
        else:
            records = (InputRecord(id=i, text=t, error=e) for i, t, e in zip(data["id"], data["text"], data["error"], strict=True))
            chunks = iter([list(zip(data["seq"], records, strict=True))])
        counts = [self._shard(chunk) for chunk in chunks]
        return {key: [count[key] for count in counts] for key in ("shard", "rows", "errors", "examples")}

    def _shard(self, chunk: list[tuple[int, Any]]) -> dict[str, Any]:
        from pipeline.inference.batch import classify_batch

        seqs = [seq for seq, _ in chunk]
        rows = classify_batch([record for _, record in chunk], self.classifiers, top_tokens=self.top_tokens)
        self._maybe_crash()
        table = output_table(rows, seqs, output_format=self.output_format, tasks=self.classifiers.tasks, labels=self.classifiers.labels)
        return write_shard(table, directory=self.directory, output_format=self.output_format)

    def _maybe_crash(self) -> None:
        """The test hook of ``CRASH_ONCE_ENV``: die (no cleanup, like a killed process) once per marker."""
        if self.crash_marker:
            try:
                os.close(os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(17)


def output_table(rows: list[dict[str, Any]], seqs: list[int], *, output_format: str, tasks: tuple[str, ...], labels: dict[str, list[str]]):
    """Output rows as an arrow table: ``seq``, ``error`` and the JSONL line (``json``), or ``seq`` and the flat columns (parquet)."""
    import pyarrow as pa

    from pipeline.inference.batch import flat_values

    if output_format == "jsonl":
        lines = [json.dumps({"seq": seq, **row}, ensure_ascii=False) for seq, row in zip(seqs, rows, strict=True)]
        schema = pa.schema([("seq", pa.int64()), ("id", pa.string()), ("error", pa.string()), ("json", pa.string())])
        columns = {"seq": seqs, "id": [row["id"] for row in rows], "error": [row["error"] for row in rows], "json": lines}
        return pa.Table.from_pydict(columns, schema=schema)
    schema = parquet_schema(tasks, labels)
    values = [[seq, *flat_values(row, tasks=tasks, labels=labels)] for seq, row in zip(seqs, rows, strict=True)]
    return pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in values], schema=schema)


def parquet_schema(tasks: tuple[str, ...], labels: dict[str, list[str]]):
    """``seq``, then the columns of ``OutputWriter`` (label, one probability per class and top tokens per task; language, warning, error)."""
    import pyarrow as pa

    fields = [("seq", pa.int64()), ("id", pa.string()), ("text", pa.string())]
    for task in tasks:
        fields += (
            [(task, pa.string())] + [(f"{task}_p_{label}", pa.float64()) for label in labels[task]] + [(f"{task}_top_tokens", pa.string())]
        )
    return pa.schema([*fields, ("language", pa.string()), ("warning", pa.string()), ("error", pa.string())])


# ---------------------------------------------------------------- write
def write_shard(table, *, directory: str, output_format: str) -> dict[str, Any]:
    """Write one table of output rows as one shard, atomically; returns its counts.

    The name comes from the first row's ``seq``: a retried batch rewrites the same shard, never a second one."""
    from pipeline.io import atomic_path

    seqs, ids, errors = (table.column(name).to_pylist() for name in ("seq", "id", "error"))
    name = Path(directory) / f"part-{min(seqs):012d}.{output_format}"
    with atomic_path(name) as tmp:
        if output_format == "jsonl":
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(line + "\n" for line in table.column("json").to_pylist())
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
    examples = [f"row {row_id}: {error}" for row_id, error in zip(ids, errors, strict=True) if error][:5]
    return {
        "shard": name.name,
        "rows": len(seqs),
        "errors": sum(1 for error in errors if error),
        "examples": json.dumps(examples, ensure_ascii=False),
    }


# ---------------------------------------------------------------- run
def run_ray_classification(
    *,
    source: RaySource,
    models: RayModels,
    output_dir: str | os.PathLike,
    output_format: str = "jsonl",
    address: str | None = None,
    actors: int = 2,
) -> RaySummary:
    """Classify ``source`` on Ray with ``actors`` actors and write the shards to ``output_dir`` (replaced at the end)."""
    output_format = ray_output_format(output_format)
    if actors < 1:
        raise ConfigError("E109", f"At least one actor is needed, got {actors}.", hint="For example 2 (one per core).")
    started = time.perf_counter()
    started_ray = connect(address, num_cpus=max(actors, os.cpu_count() or 1))
    summary = RaySummary(actors=actors, connect_seconds=round(time.perf_counter() - started, 3))
    output_dir = Path(output_dir)
    staging = output_dir.parent / f".{output_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        counts = _execute(source, models, staging=staging, output_format=output_format, actors=actors)
        _publish(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
    for count in sorted(counts, key=lambda c: c["shard"]):
        summary.shards.append(count["shard"])
        summary.rows += count["rows"]
        summary.errors += count["errors"]
        summary.error_examples += json.loads(count["examples"])[: max(0, 5 - len(summary.error_examples))]
    summary.classified = summary.rows - summary.errors
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _execute(source: RaySource, models: RayModels, *, staging: Path, output_format: str, actors: int) -> list[dict[str, Any]]:
    """Build and run the read -> classify -> write dataset; returns one count row per shard."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no INFO line per dataset, no progress-bar notice
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    staging.mkdir(parents=True)
    parts = read_parts(source, parts=4 * actors)
    actor_args = {"models": models, "source": source, "directory": str(staging), "output_format": output_format}
    actor_args["crash_marker"] = os.environ.get(CRASH_ONCE_ENV) or None
    classify = dict(
        fn_constructor_kwargs=actor_args,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=1 if models.device == "cuda" else 0,
        batch_format="pyarrow",
    )
    dataset = ray.data.from_items(parts, override_num_blocks=len(parts))
    if len(parts) > 1:  # a splittable input: each actor reads its parts (no read tasks, no records through the object store)
        dataset = dataset.map_batches(ClassifyActor, batch_size=1, **classify)
    else:  # read whole (CSV/TSV, gzip): a read task streams the records to the actors
        dataset = dataset.map_batches(read_part, fn_kwargs={"source": source}, batch_size=1, num_cpus=0, batch_format="numpy")
        dataset = dataset.map_batches(ClassifyActor, batch_size=SHARD_ROWS, **classify)
    return list(dataset.iter_rows())


def _publish(staging: Path, output_dir: Path) -> None:
    """Move the finished shards into ``output_dir``, replacing what was there."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError("E109", f"{output_dir} is a file; the Ray engine writes a directory of shards.", hint="Name a directory.")
    replace_dir(staging, output_dir)  # old output renamed aside, deleted only once the new one is in place


def read_output(directory: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The rows of a sharded JSONL or parquet output directory, in input order (by ``seq``)."""
    directory = Path(directory)
    rows: list[dict[str, Any]] = []
    for shard in sorted(directory.glob("part-*")):
        if shard.suffix == ".jsonl":
            with open(shard, encoding="utf-8") as handle:
                rows += [json.loads(line) for line in handle]
        else:
            import pyarrow.parquet as pq

            rows += pq.read_table(shard).to_pylist()
    return iter(sorted(rows, key=lambda row: row["seq"]))
