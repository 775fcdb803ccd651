"""Training stages of the topic and sentiment classifiers, and the ``bench train`` measurement.

Imports torch, numpy and torch/numpy-only project modules, so these stages run on a
GPU machine without spaCy, gensim or scikit-learn. They read the tokens file
(``data/tokens/knbc.jsonl``) and, for pretrained initialisation, the
``vectors.txt`` (word2vec text format) of a vector stage.

Training loop, in short:

* fixed seeds: the model is initialised from ``seed``; epoch ``e`` shuffles with
  ``numpy.random.default_rng([seed, e])`` and seeds torch with ``seed + e`` (dropout),
  so a resumed run repeats exactly what an uninterrupted run does (on CPU; cuDNN
  kernels are not bit-deterministic);
* length-bucketed batches, AdamW (fused on CUDA), optional inverse-frequency class
  weights, gradient-norm clipping, mixed precision (fp16 autocast + GradScaler) on CUDA;
* no host sync inside an epoch: losses and correct counts accumulate on the device
  and are read once per epoch;
* after every epoch: dev loss / accuracy / macro-F1, one JSONL log line, a checkpoint
  in the stage's work directory; early stopping on dev macro-F1 (``patience``);
* the best-dev-F1 weights are written as the model directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.io import sha256_file
from pipeline.data.labels import TASK_FIELD, TASK_LABELS
from pipeline.models.batching import EncodedSplit, bucket_batches, encode_rows, iterate_batches
from pipeline.models.classifier import AttentionClassifier
from pipeline.models.model_dir import write_model_dir
from pipeline.models.runtime import pick_device, seed_everything
from pipeline.models.vocab import Vocab, embedding_matrix, read_word2vec_text
from pipeline.text.tokenize import read_token_rows
from pipeline.training.checkpoint import EpochLog, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
VECTORS_FILENAME = "vectors.txt"
RANDOM_EMBEDDING_DIM = 100  # fallback when a section has no embedding_dim
EVAL_BATCH_SIZE = 256


# ------------------------------------------------------------------ metrics
def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def macro_f1(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 (a class never true nor predicted scores 0, as in scikit-learn)."""
    matrix = confusion_matrix(targets, predictions, num_classes)
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return float(f1.mean())


# --------------------------------------------------------------------- data
@dataclass
class TaskData:
    """Encoded train/dev(/test) splits of one task, with the vocabulary and labels."""

    vocab: Vocab
    labels: list[str]
    splits: dict[str, EncodedSplit]
    embedding: np.ndarray | None  # (V, E) pretrained table, None for random init
    coverage: float | None  # share of the vocabulary found in the pretrained vectors


def vectors_path(project_dir: Path, source: str) -> Path:
    from pipeline.paths import VECTOR_SOURCES

    return Path(project_dir) / VECTOR_SOURCES[source] / VECTORS_FILENAME


def prepare_task_data(*, tokens_path: Path, task: str, section: dict, vectors_file: Path | None, splits: tuple[str, ...] = ("train", "dev")) -> TaskData:
    """Read the tokens file, build the vocabulary from the training split (plus, with
    ``vocab_from_vectors``, every word that has a pretrained vector) and encode ``splits``."""
    token_field = section["token_field"]
    label_field = TASK_FIELD[task]
    labels = list(TASK_LABELS[task])
    rows: dict[str, list[dict]] = {name: [] for name in splits}
    for row in read_token_rows(tokens_path):
        if row["split"] in rows:
            rows[row["split"]].append({token_field: row[token_field], label_field: row[label_field], "sentence_id": row.get("sentence_id")})
    if not rows.get("train"):
        raise PipelineError(f"{tokens_path} has no training sentences.", hint="Rerun `jpipe run prepare tokenize --force`.")

    vocab = Vocab.build((row[token_field] for row in rows["train"]), min_count=section["min_count"])
    embedding = coverage = None
    if vectors_file is not None:
        words, vectors = read_word2vec_text(vectors_file)
        if section.get("vocab_from_vectors", False):
            # Words unseen in training but with a pretrained vector keep a meaningful
            # embedding instead of collapsing onto <unk> (dev, test and new reviews).
            known = set(vocab.stoi)
            vocab = Vocab(vocab.itos + [word for word in words if word not in known])
        embedding, coverage = embedding_matrix(vocab, words, vectors, seed=section["seed"])
    encoded = {
        name: encode_rows(split_rows, vocab, token_field=token_field, label_field=label_field, labels=labels, max_tokens=section["max_tokens"])
        for name, split_rows in rows.items()
    }
    return TaskData(vocab=vocab, labels=labels, splits=encoded, embedding=embedding, coverage=coverage)


def model_args_for(section: dict, *, vocab_size: int, embedding_dim: int, num_classes: int, padding_index: int, unk_index: int = 1) -> dict[str, Any]:
    """The ``AttentionClassifier`` keyword arguments (``model_args.json``) for a config section."""
    return {
        "vocab_size": vocab_size,
        "embedding_dim": embedding_dim,
        "num_classes": num_classes,
        "hidden_size": section["hidden_size"],
        "num_layers": section["num_layers"],
        "cell": section["cell"],
        "bidirectional_merge": section["bidirectional_merge"],
        "attention": section["attention"],
        "attention_size": section["attention_size"],
        "dropout": section["dropout"],
        "embedding_dropout": section.get("embedding_dropout", 0.0),
        "word_dropout": section.get("word_dropout", 0.0),
        "freeze_embeddings": section["freeze_embeddings"],
        "padding_index": padding_index,
        "unk_index": unk_index,
    }


def build_model(section: dict, data: TaskData) -> tuple[AttentionClassifier, dict[str, Any]]:
    embedding_dim = data.embedding.shape[1] if data.embedding is not None else section.get("embedding_dim", RANDOM_EMBEDDING_DIM)
    args = model_args_for(section, vocab_size=len(data.vocab), embedding_dim=embedding_dim, num_classes=len(data.labels), padding_index=data.vocab.pad_index, unk_index=data.vocab.unk_index)
    model = AttentionClassifier(**args)
    if data.embedding is not None:
        model.load_pretrained_embeddings(data.embedding)
    return model, args


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights N / (C * n_c), mean about 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (len(labels) / (num_classes * np.maximum(counts, 1.0))).astype(np.float32)


# ------------------------------------------------------------------ training
@dataclass
class StepTools:
    """What one optimisation step needs besides the model and the batch."""

    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    scaler: "torch.amp.GradScaler"
    amp: bool
    grad_clip: float
    device: torch.device


def make_step_tools(model: nn.Module, section: dict, *, device: torch.device, weights: np.ndarray | None) -> StepTools:
    amp = bool(section["amp"]) and device.type == "cuda"
    parameters = [p for p in model.parameters() if p.requires_grad]
    # fused AdamW: one kernel for all parameters instead of a loop of small ones (CUDA only)
    optimizer = torch.optim.AdamW(parameters, lr=section["learning_rate"], weight_decay=section["weight_decay"], fused=device.type == "cuda")
    loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(weights, device=device) if weights is not None else None)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    return StepTools(optimizer=optimizer, loss_fn=loss_fn, scaler=scaler, amp=amp, grad_clip=section["grad_clip"], device=device)


def train_step(model: AttentionClassifier, token_ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, tools: StepTools) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward/backward/update. Returns (loss, logits) still on the device (no host sync)."""
    tools.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=tools.device.type, dtype=torch.float16, enabled=tools.amp):
        logits, _ = model(token_ids, lengths)  # (B, C)
        loss = tools.loss_fn(logits.float(), labels)
    tools.scaler.scale(loss).backward()
    if tools.grad_clip > 0:
        tools.scaler.unscale_(tools.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tools.grad_clip)
    tools.scaler.step(tools.optimizer)
    tools.scaler.update()
    return loss.detach(), logits.detach()


@torch.inference_mode()
def predict_split(model: AttentionClassifier, split: EncodedSplit, *, device: torch.device, amp: bool = False, loss_fn: nn.Module | None = None, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, Any]:
    """Predictions (N,), probabilities (N, C) and mean loss of a split, in split order."""
    model.eval()
    num_rows = len(split)
    probabilities = torch.zeros((num_rows, model.output.out_features), dtype=torch.float32)
    loss_sum = torch.zeros((), device=device)
    for batch in iterate_batches(split, bucket_batches(split.lengths, batch_size=batch_size, shuffle=False), device=device):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            logits, _ = model(batch.token_ids, batch.lengths)
        logits = logits.float()
        if loss_fn is not None:
            loss_sum += loss_fn(logits, batch.labels) * len(batch.indices)
        probabilities[torch.from_numpy(batch.indices)] = torch.softmax(logits, dim=-1).cpu()
    predictions = probabilities.argmax(dim=-1).numpy()
    return {
        "probabilities": probabilities.numpy(),
        "predictions": predictions,
        "loss": float(loss_sum.item()) / max(1, num_rows) if loss_fn is not None else None,
    }


def _config_key(*, task: str, section_view: dict, tokens_path: Path, vectors_file: Path | None) -> str:
    """What a checkpoint must match to be resumed: task, fingerprinted settings, input contents."""
    payload = {
        "task": task,
        "section": section_view,
        "tokens": sha256_file(tokens_path),
        "vectors": sha256_file(vectors_file) if vectors_file is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _state_to_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}


@dataclass
class TrainResult:
    model: AttentionClassifier
    model_args: dict[str, Any]
    data: TaskData
    metrics: dict[str, Any]
    log: list[dict]


def train_classifier(*, task: str, section: dict, data: TaskData, work_dir: Path, resume: bool, config_key: str) -> TrainResult:
    """Train on ``data.splits['train']`` with early stopping on ``data.splits['dev']`` macro-F1."""
    device = pick_device(section["device"])
    seed = section["seed"]
    seed_everything(seed)
    model, model_args = build_model(section, data)
    model.to(device)
    train, dev = data.splits["train"], data.splits["dev"]
    num_classes = len(data.labels)
    weights = class_weights(train.labels, num_classes) if section["class_weights"] else None
    tools = make_step_tools(model, section, device=device, weights=weights)
    # Dev loss is always unweighted, so it is comparable across class-weight settings.
    dev_loss_fn = nn.CrossEntropyLoss()

    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = work_dir / CHECKPOINT_NAME
    state = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0, "finished": False, "train_seconds": 0.0}
    best_state = _state_to_cpu(model)
    records: list[dict] = []  # the epoch log, also kept in the checkpoint
    resumed_from = None
    if resume and checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path, device="cpu")
        if checkpoint.get("config_key") == config_key:
            model.load_state_dict(checkpoint["model"])
            tools.optimizer.load_state_dict(checkpoint["optimizer"])
            if checkpoint.get("scaler"):
                tools.scaler.load_state_dict(checkpoint["scaler"])
            best_state = checkpoint["best_state"]
            state = dict(checkpoint["state"])
            records = list(checkpoint.get("log", []))
            resumed_from = state["epoch"]
            logger.info("%s: resuming after epoch %d (best dev macro-F1 %.4f at epoch %d)", task, state["epoch"], state["best_f1"], state["best_epoch"])
        else:
            logger.warning("%s: the checkpoint in %s was made with other settings or inputs; training from scratch.", task, work_dir)
    elif resume:
        logger.info("%s: --resume, but no checkpoint in %s; training from scratch.", task, work_dir)

    # The JSONL log is rewritten from the checkpoint's copy, so it matches the resumed
    # state even when the process died between the checkpoint and the log line.
    log = EpochLog(work_dir / LOG_NAME, append=False)
    for record in records:
        log.write(record)

    logger.info(
        "%s: %d train / %d dev sentences, vocabulary %d, %s on %s%s",
        task, len(train), len(dev), len(data.vocab), section["cell"], device, " (AMP fp16)" if tools.amp else "",
    )
    while not state["finished"] and state["epoch"] < section["epochs"]:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        torch.manual_seed(seed + epoch)  # dropout masks of this epoch
        rng = np.random.default_rng([seed, epoch])
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for batch in iterate_batches(train, bucket_batches(train.lengths, batch_size=section["batch_size"], shuffle=True, rng=rng), device=device):
            loss, logits = train_step(model, batch.token_ids, batch.lengths, batch.labels, tools)
            loss_sum += loss * len(batch.indices)
            correct += (logits.argmax(dim=-1) == batch.labels).sum()
        train_loss = float(loss_sum.item()) / len(train)  # the epoch's only host sync
        train_accuracy = float(correct.item()) / len(train)
        train_seconds = time.perf_counter() - started

        dev_out = predict_split(model, dev, device=device, amp=tools.amp, loss_fn=dev_loss_fn)
        dev_f1 = macro_f1(dev.labels, dev_out["predictions"], num_classes)
        dev_accuracy = float((dev_out["predictions"] == dev.labels).mean()) if len(dev) else 0.0
        improved = dev_f1 > state["best_f1"]
        if improved:
            state.update(best_f1=dev_f1, best_epoch=epoch, bad_epochs=0)
            best_state = _state_to_cpu(model)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["train_seconds"] += train_seconds
        if state["bad_epochs"] >= section["patience"]:
            state["finished"] = True
        record = {
            "epoch": epoch,
            "train_loss": round(train_loss, 5),
            "train_accuracy": round(train_accuracy, 5),
            "dev_loss": round(dev_out["loss"], 5) if dev_out["loss"] is not None and math.isfinite(dev_out["loss"]) else None,
            "dev_accuracy": round(dev_accuracy, 5),
            "dev_macro_f1": round(dev_f1, 5),
            "best": improved,
            "seconds": round(time.perf_counter() - started, 3),
            "train_sentences_per_second": round(len(train) / max(train_seconds, 1e-9), 1),
            "device": device.type,
        }
        records.append(record)
        save_checkpoint(
            work_dir / CHECKPOINT_NAME,
            {
                "config_key": config_key,
                "model": _state_to_cpu(model),
                "optimizer": tools.optimizer.state_dict(),
                "scaler": tools.scaler.state_dict() if tools.amp else None,
                "best_state": best_state,
                "state": state,
                "log": records,
            },
        )
        log.write(record)
        logger.info(
            "%s epoch %d: train loss %.4f acc %.3f | dev loss %s acc %.3f macro-F1 %.4f%s (%.1fs)",
            task, epoch, train_loss, train_accuracy, record["dev_loss"], dev_accuracy, dev_f1, " *" if improved else "", record["seconds"],
        )
        if state["finished"]:
            logger.info("%s: early stop after epoch %d (no dev macro-F1 gain for %d epochs)", task, epoch, section["patience"])

    model.load_state_dict(best_state)
    model.eval()
    epoch_seconds = [r["seconds"] for r in records]
    metrics = {
        "task": task,
        "labels": data.labels,
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "early_stopped": bool(state["finished"]),
        "dev_macro_f1": round(state["best_f1"], 5),
        "dev_accuracy": next((r["dev_accuracy"] for r in records if r["epoch"] == state["best_epoch"]), None),
        "train_sentences": len(train),
        "dev_sentences": len(dev),
        "vocab_size": len(data.vocab),
        "embedding_init": section["embedding_init"],
        "embedding_coverage": round(data.coverage, 4) if data.coverage is not None else None,
        "device": device.type,
        "amp": tools.amp,
        "mean_epoch_seconds": round(float(np.mean(epoch_seconds)), 3) if epoch_seconds else None,
        "resumed_from_epoch": resumed_from,
        "class_weights": [round(float(w), 4) for w in weights] if weights is not None else None,
    }
    return TrainResult(model=model, model_args=model_args, data=data, metrics=metrics, log=records)


# -------------------------------------------------------------------- stages
def _train_stage(ctx, task: str) -> dict[str, Any]:
    from pipeline.paths import CLASSIFIER_DIRS, TOKENS, VECTOR_SOURCES

    section = ctx.section
    tokens_path = ctx.input(TOKENS)
    vectors_file = None
    if section["embedding_init"] != "random":
        directory = ctx.input(VECTOR_SOURCES[section["embedding_init"]])
        vectors_file = directory / VECTORS_FILENAME
        if not vectors_file.exists():
            raise PipelineError(
                f"{vectors_file.relative_to(ctx.project_dir)} is missing.",
                hint=f"Rerun `jpipe run {'spacy_vectors' if section['embedding_init'] == 'spacy' else section['embedding_init']} --force`, "
                f"or --set train_{task}.embedding_init=random.",
            )
    data = prepare_task_data(tokens_path=tokens_path, task=task, section=section, vectors_file=vectors_file)
    config_key = _config_key(task=task, section_view=ctx.config.fingerprint_view(ctx.stage.section), tokens_path=tokens_path, vectors_file=vectors_file)
    result = train_classifier(task=task, section=section, data=data, work_dir=Path(ctx.work_dir), resume=ctx.resume, config_key=config_key)

    out_dir = ctx.output(CLASSIFIER_DIRS[task])
    write_model_dir(
        out_dir,
        model=result.model,
        architecture="AttentionClassifier",
        model_args=result.model_args,
        vocab=data.vocab,
        labels=data.labels,
        metrics={**result.metrics, "config": dict(section)},
        extra={"token_field": section["token_field"], "max_tokens": section["max_tokens"], "task": task},
    )
    with open(out_dir / LOG_NAME, "w", encoding="utf-8") as handle:
        for record in result.log:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    metrics = result.metrics
    return {
        "dev_macro_f1": metrics["dev_macro_f1"],
        "best_epoch": metrics["best_epoch"],
        "epochs": metrics["epochs_run"],
        "epoch_seconds": metrics["mean_epoch_seconds"],
        "device": metrics["device"],
        "vocab": metrics["vocab_size"],
    }


def train_topic_stage(ctx) -> dict[str, Any]:
    """Stage ``train_topic``: 4 themes (Gourmet, Keitai, Kyoto, Sports)."""
    return _train_stage(ctx, "topic")


def train_sentiment_stage(ctx) -> dict[str, Any]:
    """Stage ``train_sentiment``: negative, neutral, positive."""
    return _train_stage(ctx, "sentiment")


# ----------------------------------------------------------------- benchmark
def _synthetic_split(*, count: int, vocab_size: int, num_classes: int, seed: int) -> EncodedSplit:
    """KNBC-like sentence lengths (log-normal, median ~14 tokens) when no tokens file exists."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=2.6, sigma=0.5, size=count).astype(np.int64), 1, 120)
    sequences = [rng.integers(2, vocab_size, size=length, dtype=np.int64) for length in lengths]
    return EncodedSplit(sequences=sequences, labels=rng.integers(0, num_classes, size=count, dtype=np.int64))


def benchmark_training(*, project_dir: Path, section: dict, task: str = "topic", steps: int = 50, batch_size: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Training-step throughput of the classifier vs a bare (cuDNN on GPU) bidirectional ``nn.LSTM``
    forward + backward on the same padded shapes, both in the same precision.

    Batches are the real training batches of ``task`` (length-bucketed) when the
    project has a tokens file, else synthetic KNBC-like lengths.
    """
    from pipeline.paths import TOKENS

    section = dict(section)
    if batch_size:
        section["batch_size"] = batch_size
    if device:
        section["device"] = device
    dev = pick_device(section["device"])
    seed_everything(section["seed"])
    tokens_path = Path(project_dir) / TOKENS
    if section["embedding_init"] != "random":
        # Same shapes as the real run: the pretrained width, random values (loading is not timed).
        header = vectors_path(Path(project_dir), section["embedding_init"])
        if header.exists():
            with open(header, encoding="utf-8") as handle:
                section["embedding_dim"] = int(handle.readline().split()[1])
    if tokens_path.exists():
        random_section = {**section, "embedding_init": "random"}
        data = prepare_task_data(tokens_path=tokens_path, task=task, section=random_section, vectors_file=None, splits=("train",))
        train, source = data.splits["train"], "knbc"
    else:
        labels = list(TASK_LABELS[task])
        train = _synthetic_split(count=3400, vocab_size=8000, num_classes=len(labels), seed=section["seed"])
        data = TaskData(vocab=Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(7998)]), labels=labels, splits={"train": train}, embedding=None, coverage=None)
        source = "synthetic"
    model, _ = build_model(section, data)
    model.to(dev).train()
    tools = make_step_tools(model, section, device=dev, weights=None)
    rng = np.random.default_rng(section["seed"])
    batches = []
    while len(batches) < steps + 5:
        batches.extend(bucket_batches(train.lengths, batch_size=section["batch_size"], shuffle=True, rng=rng))
    batches = batches[: steps + 5]
    # Pre-pad and move every batch once so that both measurements time device work, not padding.
    prepared = list(iterate_batches(train, batches, device=dev))
    sentences = sum(len(b.indices) for b in prepared[5:])
    tokens = int(sum(int(b.lengths.sum()) for b in prepared[5:]))

    def synchronize() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def time_model() -> float:
        for batch in prepared[:5]:  # warm-up: cuDNN plans, allocator
            train_step(model, batch.token_ids, batch.lengths, batch.labels, tools)
        synchronize()
        started = time.perf_counter()
        for batch in prepared[5:]:
            train_step(model, batch.token_ids, batch.lengths, batch.labels, tools)
        synchronize()
        return time.perf_counter() - started

    embedding_dim = model.embedding.embedding_dim
    rnn_class = nn.LSTM if section["cell"] == "lstm" else nn.GRU
    bare = rnn_class(embedding_dim, section["hidden_size"], num_layers=section["num_layers"], batch_first=True, bidirectional=True).to(dev)
    inputs = [torch.randn(b.token_ids.shape[0], b.token_ids.shape[1], embedding_dim, device=dev, requires_grad=True) for b in prepared]

    def time_bare() -> float:
        def step(x: torch.Tensor) -> None:
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=tools.amp):
                out, _ = bare(x)
            out.float().sum().backward()

        for x in inputs[:5]:
            step(x)
        synchronize()
        started = time.perf_counter()
        for x in inputs[5:]:
            step(x)
        synchronize()
        return time.perf_counter() - started

    model_seconds = time_model()
    bare_seconds = time_bare()
    model_rate = sentences / model_seconds
    bare_rate = sentences / bare_seconds
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "task": task,
        "embedding_dim": embedding_dim,
        "hidden_size": section["hidden_size"],
        "freeze_embeddings": section["freeze_embeddings"],
        "data": source,
        "amp": tools.amp,
        "threads": torch.get_num_threads(),
        "batch_size": section["batch_size"],
        "steps": len(prepared) - 5,
        "mean_batch_tokens": round(tokens / (len(prepared) - 5), 1),
        "train_step": {"sentences_per_second": round(model_rate, 1), "steps_per_second": round((len(prepared) - 5) / model_seconds, 2)},
        "bare_rnn_forward_backward": {"sentences_per_second": round(bare_rate, 1), "steps_per_second": round((len(prepared) - 5) / bare_seconds, 2)},
        "ratio": round(model_rate / bare_rate, 3),
    }
