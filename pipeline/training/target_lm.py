"""Stage ``finetune_lm_<task>``: ULMFiT's target-LM fine-tuning (step b).

The general forward and backward LMs of ``pretrain_lm`` go on learning, as language models, on the task's own
**training** texts (KNBC's training sentences for topic and sentiment, a file task's training rows); dev and test
texts never train them. The classifier of the task then starts from these LMs instead of the general ones
(``[classifier] init = "pretrained"`` with ``target_lm_epochs`` > 0).

* Text: the training rows in file order, each followed by ``</s>``, on the LMs' own vocabulary (other words are
  ``<unk>``). ``HELD_APART_PERCENT`` of the training rows, chosen by a hash of the row's position, are held apart:
  their perplexity is the early-stopping metric, before and after fine-tuning.
* Training: ``target_lm_epochs`` passes over the text through the one loop (resume, checkpoints), Adam at
  ``target_lm_learning_rate``, truncated BPTT with ``[pretrain_lm]``'s bptt, batch size, dropout and clipping. With
  ``freeze_embeddings`` (the classifier keeps its embedding fixed) the embedding stays as pretrained, so the LSTM
  adapts to the input space the classifier will feed it.

Imports torch and numpy only (no spaCy): it reads the tokens file.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.tasks import task_rows_file
from pipeline.errors import InputError
from pipeline.io import read_json, sha256_file, write_json
from pipeline.models.language_model import load_generator
from pipeline.models.runtime import pick_device
from pipeline.models.vocab import EOS, Vocab
from pipeline.text.tokenize import read_token_rows
from pipeline.training.pretrain import DIRECTIONS, SUMMARY_NAME, direction_stream, pretrain_direction, stream_perplexity
from pipeline.training.pretrain_data import MIN_DEV_TOKENS, PretrainText
from pipeline.training.stage_io import tokenizer_settings, write_trained_model

logger = logging.getLogger(__name__)

HELD_APART_PERCENT = 10
FINETUNE_NAME = "finetune.json"


def held_apart_row(index: int) -> bool:
    """Whether training row ``index`` is held apart from target-LM training (a fixed 10%, by a hash of the index)."""
    digest = hashlib.sha256(f"target-lm-{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_APART_PERCENT


def encode_stream(sentences: list[list[str]], vocab: Vocab) -> np.ndarray:
    """Sentences -> one id stream over ``vocab``, ``</s>`` after each sentence (int64)."""
    eos = vocab.stoi[EOS]
    ids = [id_ for sentence in sentences for id_ in (*vocab.encode(sentence), eos)]
    return np.asarray(ids, dtype=np.int64)


def task_lm_text(tokens_path: Path, *, vocab: Vocab, token_field: str) -> PretrainText:
    """The task's training rows as a training stream and a held-apart stream (no test text)."""
    train: list[list[str]] = []
    held: list[list[str]] = []
    for index, row in enumerate(row for row in read_token_rows(tokens_path) if row["split"] == "train"):
        (held if held_apart_row(index) else train).append(row[token_field])
    text = PretrainText(
        vocab=vocab, train=encode_stream(train, vocab), dev=encode_stream(held, vocab), knbc_test=np.zeros(0, dtype=np.int64)
    )
    if len(text.dev) < MIN_DEV_TOKENS or len(text.train) == 0:
        raise InputError(
            "E281",
            f"{tokens_path}: the held-apart {HELD_APART_PERCENT}% of the training rows hold {len(text.dev)} tokens; at least "
            f"{MIN_DEV_TOKENS} are needed to measure the fine-tuned language models ({len(train) + len(held)} training rows).",
            hint="Add training rows, or set the task's classifier.target_lm_epochs = 0 (no target-LM fine-tuning).",
        )
    text.stats = {
        "train_rows": len(train),
        "held_apart_rows": len(held),
        "train_tokens": len(text.train),
        "dev_tokens": len(text.dev),
        "train_unk_rate": round(float((text.train == vocab.unk_index).mean()), 4),
    }
    return text


def finetune_section(ctx) -> dict[str, Any]:
    """The settings of the fine-tuning loop: [pretrain_lm]'s stream shape, the task classifier's epochs, rate and seed."""
    classifier, pretrain = ctx.section, ctx.config["pretrain_lm"]
    return {
        **dict(pretrain),
        "rounds": classifier["target_lm_epochs"],
        "learning_rate": classifier["target_lm_learning_rate"],
        "freeze_vectors": classifier["freeze_embeddings"],
        "seed": classifier["seed"],
    }


def finetune_lm_stage(ctx) -> dict[str, Any]:
    """Stage ``finetune_lm_<task>``: both directions fine-tuned on the task's training texts, and ``finetune.json``."""
    from pipeline.paths import PRETRAINED_LM_DIR, target_lm_dir

    task, classifier = ctx.stage.task, ctx.section
    lm_dir = ctx.input(PRETRAINED_LM_DIR)
    tokens_path = ctx.input(task_rows_file(ctx.config, task))
    token_field = read_json(lm_dir / "forward" / "vocab.json").get("token_field")
    forward = load_generator(lm_dir / "forward")
    text = task_lm_text(tokens_path, vocab=forward.vocab, token_field=token_field)
    section = finetune_section(ctx)
    section["max_tokens"] = len(text.train) * section["rounds"]  # each round is one pass over the training text
    logger.info("finetune_lm_%s: %s", task, ", ".join(f"{key} {value}" for key, value in text.stats.items()))
    signature = f"{sha256_file(tokens_path)} {sha256_file(lm_dir / 'forward' / 'model.safetensors')} {text.stats}"
    out = ctx.output(target_lm_dir(task))
    summary: dict[str, Any] = {"task": task, "text": text.stats, "token_field": token_field, "general": str(PRETRAINED_LM_DIR)}
    for direction in DIRECTIONS:
        general = load_generator(lm_dir / direction)
        before = stream_perplexity(general.model, direction_stream(text.dev, direction), device=pick_device(section["device"]))
        rows = np.ones(len(general.vocab), dtype=bool) if section["freeze_vectors"] else None
        trained = pretrain_direction(
            direction=direction,
            text=text,
            embedding=(None, rows),
            model_args=read_json(lm_dir / direction / "config.json")["model_args"],
            section=section,
            work_dir=Path(ctx.work_dir),
            resume=ctx.resume,
            signature=signature,
            stage=f"finetune_lm_{task}",
            model=general.model,
        )
        trained.metrics["dev_perplexity_before"] = round(before, 3) if before is not None else None
        trained.extra = {"token_field": token_field, "direction": direction, "level": "word", "unit": "stream", "task": task}
        tokenizer = tokenizer_settings(project_dir=ctx.project_dir, token_field=token_field)
        write_trained_model(out / direction, trained, tokenizer=tokenizer, config={**section, "classifier": dict(classifier)})
        summary[direction] = trained.metrics
    write_json(out / FINETUNE_NAME, summary)
    # the classifier reads pretrain.json's figures beside the LMs, as from a pretrain_lm directory
    write_json(out / SUMMARY_NAME, {**read_json(lm_dir / SUMMARY_NAME), "target_lm": summary})
    return {
        "held_apart_perplexity_before": summary["forward"]["dev_perplexity_before"],
        "held_apart_perplexity_after": summary["forward"].get("dev_perplexity"),
        "train_tokens": text.stats["train_tokens"],
        "epochs_run": summary["forward"].get("epochs_run"),
    }
