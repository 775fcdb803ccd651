"""What the training stages read besides the tokens (pretrained vectors) and how they publish a model.

Every training stage writes its model directory through :func:`write_trained_model`: the
self-contained directory of ``pipeline.models.model_dir`` (with the tokenizer settings of
the tokens it trained on) plus its epoch log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError
from pipeline.io import write_jsonl
from pipeline.models.model_dir import write_model_dir
from pipeline.models.vocab import Vocab
from pipeline.training.loop import LOG_NAME

VECTORS_FILENAME = "vectors.txt"


def pretrained_vectors_file(ctx, *, section_name: str, source: str) -> Path | None:
    """``vectors.txt`` of the vector stage named by ``<section_name>.embedding_init`` (None for "random")."""
    from pipeline.paths import VECTOR_SOURCES

    if source == "random":
        return None
    vectors_file = ctx.input(VECTOR_SOURCES[source]) / VECTORS_FILENAME
    if not vectors_file.exists():
        if source == "imported":  # a compact (similarity-only) import has no vectors.txt to initialise a model from
            rebuild = "Import the table again with the gensim layout (`jpipe vectors import`, see its help)"
        else:
            rebuild = f"Rebuild it with `jpipe run {'spacy_vectors' if source == 'spacy' else source}`"
        raise ModelError(
            "E305",
            f"{vectors_file.relative_to(ctx.project_dir)} is missing.",
            hint=f'{rebuild}, or set {section_name}.embedding_init = "random".',
        )
    return vectors_file


def tokenizer_settings(*, project_dir: str | os.PathLike, token_field: str, split_mode: str | None = None) -> dict[str, str]:
    """How text must be tokenized for a model trained on this project's tokens file.

    The split mode is ``split_mode`` when given (a file task records its own), else the one
    ``data/tokens/meta.json`` records (the tokens the model saw).
    """
    from pipeline.text.tokenize import tokenized_split_mode

    mode = split_mode or tokenized_split_mode(project_dir)
    return {"split_mode": mode, "token_field": token_field, "normalization": "sudachi"}


@dataclass
class TrainedModel:
    """A trained model (best weights, eval mode) and everything its model directory holds."""

    model: Any
    architecture: str
    model_args: dict[str, Any]
    vocab: Vocab
    metrics: dict[str, Any]
    records: list[dict]  # the epoch log
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # beside the tokens in vocab.json: token field, framing, task


# The stage summary (lock file and `jpipe run` output) of every training stage, after its monitored metric.
SUMMARY_KEYS = ("best_epoch", "epochs_run", "mean_epoch_seconds", "device", "vocab_size")


def write_trained_model(directory: str | os.PathLike, trained: TrainedModel, *, tokenizer: dict[str, str], config: dict[str, Any]) -> None:
    """``write_model_dir`` (config.json, vocab, labels, safetensors, metrics + ``config``) and ``train_log.jsonl``, each atomic."""
    write_model_dir(
        directory,
        model=trained.model,
        architecture=trained.architecture,
        model_args=trained.model_args,
        vocab=trained.vocab,
        metrics={**trained.metrics, "config": config},
        labels=trained.labels,
        tokenizer=tokenizer,
        extra=trained.extra,
    )
    write_jsonl(Path(directory) / LOG_NAME, trained.records)


def publish_model(
    ctx,
    output: str,
    trained: TrainedModel,
    *,
    token_field: str,
    monitor: str,
    config: dict[str, Any] | None = None,
    split_mode: str | None = None,
) -> dict[str, Any]:
    """Write ``trained`` as the stage output ``output``; returns the stage summary (``monitor`` first).

    ``config`` (default: the stage's section) is recorded in the model's metrics.json.
    """
    from pipeline.training import distributed

    summary = {key: trained.metrics[key] for key in (monitor, *SUMMARY_KEYS)}
    if not distributed.current().main:
        return summary  # data-parallel training: rank 0 alone writes the model directory
    tokenizer = tokenizer_settings(project_dir=ctx.project_dir, token_field=token_field, split_mode=split_mode)
    write_trained_model(ctx.output(output), trained, tokenizer=tokenizer, config=dict(ctx.section) if config is None else config)
    return summary
