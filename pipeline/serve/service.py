"""The service behind the routes: loaded models, worker threads, the classify batcher, the limits.

CPU work never runs on the event loop. Three worker threads, one job at a time each:

* ``model``: classify micro-batches (:mod:`.batching`): tokenize the batch's texts, then
  one forward pass per task. Tokenizing costs ~0.06 ms a text, the forward pass ~10x more,
  so both run here: one thread hop per request.
* ``text``: vector queries and generation prompts (tokenizing and scoring).
* ``generate``: sampling, one step of one generation at a time, so streams interleave.

The Sudachi tokenizer is one shared object and is not thread-safe (a second thread in it
fails with "Already borrowed"), so every call into it holds ``tokenizer_lock``.
Torch threads are set once at start-up (``serve.torch_threads``, 1 by default: on a
small machine the other core parses requests).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.errors import InputError, ModelError, PipelineError
from pipeline.serve.batching import MicroBatcher
from pipeline.serve.registry import ServedModels

logger = logging.getLogger(__name__)

DEFAULT_GENERATE_TOKENS = 60
MIN_TOP_P = 1e-6


def row_error(error: PipelineError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


def auto_source(loaded: dict[str, Any]) -> str:
    """The vector source that "auto" (and no source) means: as in `jpipe similar`, the first of
    ginza, word2vec that is loaded (the everyday-word table first), else the first loaded."""
    from pipeline.vectors.store import AUTO_SOURCE_ORDER

    return next((name for name in AUTO_SOURCE_ORDER if name in loaded), next(iter(loaded)))


class Service:
    """Endpoint logic on loaded models; ``limits`` is the ``[serve]`` config section."""

    def __init__(self, models: ServedModels, *, limits: Any) -> None:
        self.models = models
        self.limits = limits
        self.started = time.time()
        self.text_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpipe-text")
        self.model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpipe-model")
        self.generate_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpipe-generate")
        self.tokenizer_lock = threading.Lock()
        self.batcher = MicroBatcher(
            self._run_batch,
            executor=self.model_pool,
            max_batch_size=limits["max_batch_size"],
            max_wait_ms=limits["max_wait_ms"],
            max_queue=limits["max_queue"],
        )

    async def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        """Let queued classify batches finish, then stop the worker threads."""
        await self.batcher.stop()
        for pool in (self.text_pool, self.model_pool, self.generate_pool):
            pool.shutdown(wait=True, cancel_futures=False)

    async def on_text_thread(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` on the text thread, holding the tokenizer lock."""

        def call() -> Any:
            with self.tokenizer_lock:
                return function(*args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self.text_pool, call)

    # ------------------------------------------------------------ classify
    def _tasks(self, requested: list[str] | None) -> tuple[str, ...]:
        loaded = self.models.tasks
        if not loaded:
            raise ModelError(
                "E331", "This server has no classifier loaded.", hint="Train one with `jpipe run train_topic` and restart the server."
            )
        tasks = tuple(dict.fromkeys(requested or loaded))
        missing = [task for task in tasks if task not in loaded]
        if missing:
            raise ModelError("E331", f"No {', '.join(missing)} classifier is loaded.", hint=f"Loaded tasks: {', '.join(loaded)}.")
        return tasks

    def _check_text(self, text: str) -> PipelineError | None:
        """Why a row cannot be classified, before tokenizing (empty, whitespace only, too long, not Unicode)."""
        if not text or text.isspace():
            return InputError("E236", "Empty or whitespace-only text.")
        if len(text) > self.limits["max_chars"]:
            return InputError("E244", f"Text of {len(text)} characters; this server takes at most {self.limits['max_chars']}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return InputError("E236", "Text is not valid Unicode (it has a lone surrogate code point).")
        return None

    def _tokenize_rows(self, texts: list[str]) -> list[Any]:
        """Tokens per text (per split mode), or the ``InputError`` of a text without tokens. Call with the tokenizer lock."""
        classifiers = self.models.classifiers
        rows: list[Any] = []
        for text in texts:
            try:
                tokens = classifiers.tokenize(text)
            except Exception as exc:  # noqa: BLE001 - one bad text must not fail the request
                rows.append(InputError("E236", f"The tokenizer failed on this text ({type(exc).__name__})."))
                continue
            rows.append(tokens if any(t["surface"] for t in tokens.values()) else InputError("E236", "Text has no tokens."))
        return rows

    def _run_batch(self, texts: list[str], tasks: list[tuple[str, ...]]) -> list[dict[str, Any] | PipelineError]:
        """Per text: predictions for the tasks it asked for, or why it has none. Tokenizes, then one forward pass per task.

        Runs on the model thread.
        """
        with self.tokenizer_lock:
            rows = self._tokenize_rows(texts)
        results: list[dict[str, Any] | PipelineError] = [row if isinstance(row, PipelineError) else {} for row in rows]
        for task, classifier in self.models.classifiers.classifiers.items():
            wanted = [index for index, row_tasks in enumerate(tasks) if task in row_tasks and not isinstance(rows[index], PipelineError)]
            if not wanted:
                continue
            predictions = classifier.predict_tokens([rows[index][classifier.split_mode] for index in wanted])
            for index, prediction in zip(wanted, predictions, strict=True):
                results[index][task] = prediction
        return results

    def _check_count(self, count: int) -> None:
        if count > self.limits["max_texts"]:
            raise InputError(
                "E243",
                f"{count} texts in one request; this server takes at most {self.limits['max_texts']}.",
                hint="Split the texts over several requests.",
            )

    async def classify(self, texts: list[str], *, tasks: list[str] | None, explain: bool) -> dict[str, Any]:
        self._check_count(len(texts))
        chosen = self._tasks(tasks)
        errors: dict[int, PipelineError] = {i: e for i, text in enumerate(texts) if (e := self._check_text(text)) is not None}
        good = [i for i in range(len(texts)) if i not in errors]
        predictions = await self.batcher.submit([texts[i] for i in good], chosen)
        by_index = dict(zip(good, predictions, strict=True))
        errors.update({i: p for i, p in by_index.items() if isinstance(p, PipelineError)})
        results = []
        for index in range(len(texts)):
            if index in errors:
                results.append({"index": index, "tasks": {}, "language": None, "warning": None, "error": row_error(errors[index])})
                continue
            tasks_json = {t: _task_json(p, explain) for t, p in by_index[index].items()}
            results.append({"index": index, "tasks": tasks_json, **_language_json(texts[index]), "error": None})
        return {"results": results, "model": self._model_json(chosen)}

    def _model_json(self, tasks: tuple[str, ...]) -> dict[str, Any]:
        entries = {entry["name"]: entry for entry in self.models.entries}
        return {
            "tasks": {task: {"labels": entries[task]["labels"], "format_version": entries[task]["format_version"]} for task in tasks},
            "max_batch_size": self.batcher.max_batch_size,
        }

    # ------------------------------------------------------------ vectors
    def vectors(self, source: str | None):
        loaded = self.models.vectors
        if not loaded:
            raise ModelError(
                "E331", "This server has no word vectors loaded.", hint="Train them with `jpipe run word2vec` and restart the server."
            )
        name = auto_source(loaded) if source in (None, "auto") else source
        if name not in loaded:
            raise ModelError("E331", f"No vector source '{name}' is loaded.", hint=f"Loaded sources: {', '.join(loaded)}.")
        return loaded[name]

    def _check_topn(self, topn: int) -> None:
        if topn > self.limits["max_topn"]:
            raise InputError(
                "E241",
                f"topn = {topn} is over this server's limit of {self.limits['max_topn']}.",
                hint=f"Ask for at most {self.limits['max_topn']} neighbours.",
            )

    async def similar(self, word: str, *, topn: int, source: str | None) -> dict[str, Any]:
        self._check_topn(topn)
        vectors = self.vectors(source)
        found = await self.on_text_thread(vectors.similar_json, word, topn=topn)
        return {
            "word": word,
            "source": vectors.source,
            "keys": found["keys"],
            "composed": found["how"] == "averaged",
            "neighbours": found["neighbours"],
        }

    async def similarity(self, pairs: list[tuple[str, str]], *, source: str | None) -> dict[str, Any]:
        if len(pairs) > self.limits["max_pairs"]:
            raise InputError(
                "E243",
                f"{len(pairs)} pairs in one request; this server takes at most {self.limits['max_pairs']}.",
                hint="Split the pairs over several requests.",
            )
        vectors = self.vectors(source)

        def score_all() -> tuple[list[float | None], list[dict | None], list[bool | None]]:
            scores: list[float | None] = []
            errors: list[dict | None] = []
            same_row: list[bool | None] = []
            for a, b in pairs:
                try:
                    found = vectors.similarity_json(a, b)
                    scores.append(found["score"])
                    same_row.append(found["same_row"])
                    errors.append(None)
                except PipelineError as exc:
                    scores.append(None)
                    same_row.append(None)
                    errors.append(row_error(exc))
            return scores, errors, same_row

        scores, errors, same_row = await self.on_text_thread(score_all)
        return {"source": vectors.source, "scores": scores, "errors": errors, "same_row": same_row}

    async def analogy(self, a: str, b: str, c: str, *, topn: int, source: str | None) -> dict[str, Any]:
        self._check_topn(topn)
        vectors = self.vectors(source)
        found = await self.on_text_thread(vectors.analogy_json, a, b, c, topn=topn)
        return {"a": a, "b": b, "c": c, "source": vectors.source, "neighbours": found["neighbours"]}

    # ------------------------------------------------------------ extract
    async def extract(self, texts: list[str], *, beam: int) -> dict[str, Any]:
        """Opinion records per text; a bad row gets its own error. Runs on the text thread (Sudachi, then the model)."""
        if self.models.extractor is None:
            raise ModelError(
                "E331",
                "This server has no opinion extractor loaded.",
                hint="Train it with `jpipe run train_extractor` and restart the server.",
            )
        self._check_count(len(texts))
        extractor = self.models.extractor

        def extract_all() -> list[dict[str, Any]]:
            results = []
            for index, text in enumerate(texts):
                error = self._check_text(text)
                try:
                    records = extractor.extract_one(text, beam=beam) if error is None else None
                except PipelineError as exc:
                    records, error = None, exc
                results.append({"index": index, "records": records, "error": row_error(error) if error else None})
            return results

        return {"results": await self.on_text_thread(extract_all), "beam": beam}

    # ------------------------------------------------------------ generate
    def _generator(self):
        if self.models.generator is None:
            raise ModelError(
                "E331", "This server has no generator loaded.", hint="Train it with `jpipe run train_generator` and restart the server."
            )
        return self.models.generator

    async def prepare_generation(self, options: dict[str, Any]):
        """Check the limits and options and tokenize the prompt; errors here become 4xx replies (before any streaming)."""
        generator = self._generator()
        limits = self.limits
        if options["max_tokens"] is None:
            options = {**options, "max_tokens": min(DEFAULT_GENERATE_TOKENS, limits["max_generate_tokens"])}
        # A top_p below float32's smallest number becomes 0 in the sampler and filters out every token;
        # any top_p this small keeps only the most likely token, as MIN_TOP_P does.
        options = {**options, "top_p": max(options["top_p"], MIN_TOP_P)}
        if options["max_tokens"] > limits["max_generate_tokens"] or options["num"] > limits["max_generate_num"]:
            raise InputError(
                "E247",
                f"max_tokens = {options['max_tokens']}, num = {options['num']}; this server allows at most {limits['max_generate_tokens']} tokens and {limits['max_generate_num']} texts.",
                hint="Ask for fewer tokens or texts.",
            )
        if len(options["prompt"]) > limits["max_chars"]:
            raise InputError(
                "E244",
                f"Prompt of {len(options['prompt'])} characters; this server takes at most {limits['max_chars']}.",
                hint="Give a shorter prompt.",
            )
        return await self.on_text_thread(generator.prepare, **options)

    async def generate(self, plan) -> dict[str, Any]:
        result = await asyncio.get_running_loop().run_in_executor(self.generate_pool, self.models.generator.complete, plan)
        return {"text": result.text, **result.to_json()}

    async def stream(self, plan) -> AsyncIterator[dict[str, Any]]:
        """``{"token": piece}`` per piece, then ``{"done": true, "text", "seed", "ended"}``; each step on the generate thread."""
        loop = asyncio.get_running_loop()
        pieces = self.models.generator.stream_plan(plan)
        text: list[str] = []
        steps = 0
        while (piece := await loop.run_in_executor(self.generate_pool, next, pieces, None)) is not None:
            text.append(piece)
            steps += 1
            yield {"token": piece}
        new_tokens = steps - (1 if plan.units else 0)
        ended = "max_tokens" if new_tokens >= plan.max_tokens else "eos"
        yield {"done": True, "text": "".join(text), "seed": plan.seed, "theme": plan.theme, "ended": ended}

    # ------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        return {"uptime_seconds": round(time.time() - self.started, 1), "rss_mb": rss_mb(), "classify": self.batcher.stats.to_json()}


def _language_json(text: str) -> dict[str, str | None]:
    """``language`` (ja / other) and ``warning`` of a text (``pipeline.text.language``): the labels stay, with the warning."""
    from pipeline.text.language import check_language

    check = check_language(text)
    return {"language": "ja" if check.japanese else "other", "warning": check.warning}


def _task_json(prediction, explain: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"label": prediction.label, "probabilities": prediction.probabilities}
    if explain:
        data["tokens"] = prediction.tokens
        data["weights"] = prediction.weights
    return data


def rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux ``/proc``), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
