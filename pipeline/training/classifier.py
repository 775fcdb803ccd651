"""Training stages of the topic and sentiment classifiers (the loop itself is ``pipeline.training.loop``).

Imports torch, numpy and torch/numpy-only project modules, so these stages run on a
GPU machine without spaCy, gensim or scikit-learn. They read the tokens file
(``data/tokens/knbc.jsonl``) and, for pretrained initialisation, the
``vectors.txt`` (word2vec text format) of a vector stage.

What is specific to the classifier (``ClassifierTraining``):

* fixed seeds: the model is initialised from ``seed``; epoch ``e`` shuffles with
  ``numpy.random.default_rng([seed, e])`` and seeds torch with ``seed + e`` (dropout),
  so a resumed run repeats exactly what an uninterrupted run does;
* length-bucketed batches, AdamW (fused on CUDA), optional inverse-frequency class
  weights; no host sync inside an epoch: losses and correct counts accumulate on the
  device and are read once per epoch;
* dev loss / accuracy / macro-F1 after every epoch; early stopping on dev macro-F1.

The best-dev-F1 weights are written as the model directory. With ``seeds`` > 1 the stage
trains one model per seed (``seed, seed + 1, ...``, each with its own resumable checkpoint);
the model directory is the seed with the median dev macro-F1, and every seed's model is kept
in its ``seeds/<seed>/`` for evaluation to score. With ``calibrate`` (default) each published
model gets a dev-fitted temperature (``calibration.json``), and with ``ensemble`` the model
directory also lists every seed as an ensemble (``ensemble.json``): ``pipeline.training.calibration``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.tasks import label_field, lm_dir_for, task_labels, task_rows_file
from pipeline.errors import InputError
from pipeline.io import sha256_file
from pipeline.metrics import accuracy, macro_f1
from pipeline.models.batching import Batch, EncodedSplit, bucket_batches, encode_rows, iterate_batches
from pipeline.models.classifier import AttentionClassifier, predict_split
from pipeline.models.runtime import pick_device, seed_everything
from pipeline.models.vocab import Vocab, embedding_matrix, read_word2vec_text
from pipeline.text.tokenize import read_token_rows
from pipeline.training import distributed
from pipeline.training.calibration import calibrate_trained, training_settings
from pipeline.training.loop import DevStats, EarlyStopping, LoopSettings, StepRunner, TrainStats, checkpoint_signature, train
from pipeline.training.seeds import publish_seeds, train_seeds
from pipeline.training.stage_io import (
    VECTORS_FILENAME,
    TrainedModel,
    pretrained_vectors_file,
)
from pipeline.training.ulmfit import RatePlan, param_groups_and_plan

logger = logging.getLogger(__name__)

RANDOM_EMBEDDING_DIM = 100  # fallback when a section has no embedding_dim
ARCHITECTURE = "AttentionClassifier"


# --------------------------------------------------------------------- data
@dataclass
class TaskData:
    """Encoded train/dev(/test) splits of one task, with the vocabulary and labels."""

    vocab: Vocab
    labels: list[str]
    splits: dict[str, EncodedSplit]
    embedding: np.ndarray | None  # (V, E) pretrained table, None for random init
    coverage: float | None  # share of the vocabulary found in the pretrained vectors


def vectors_path(project_dir: Path, *, source: str) -> Path:
    from pipeline.paths import VECTOR_SOURCES

    return Path(project_dir) / VECTOR_SOURCES[source] / VECTORS_FILENAME


def _read_rows(tokens_path: Path, *, label_field: str, token_field: str, splits: tuple[str, ...]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {name: [] for name in splits}
    for row in read_token_rows(tokens_path):
        if row["split"] in rows:
            rows[row["split"]].append({token_field: row[token_field], label_field: row[label_field], "sentence_id": row.get("sentence_id")})
    if not rows.get("train"):
        raise InputError("E209", f"{tokens_path} has no training sentences.", hint="Rebuild the tokens with `jpipe run prepare tokenize`.")
    return rows


def prepare_task_data(
    *,
    tokens_path: Path,
    labels: list[str],
    label_field: str,
    section: dict,
    vectors_file: Path | None,
    splits: tuple[str, ...] = ("train", "dev"),
) -> TaskData:
    """Read the tokens file, build the vocabulary from the training split (plus, with
    ``vocab_from_vectors``, every word that has a pretrained vector) and encode ``splits``.

    ``label_field`` is the row field holding the label (``theme`` for KNBC's topic, ``label`` for a file task).
    """
    token_field = section["token_field"]
    labels = list(labels)
    rows = _read_rows(tokens_path, label_field=label_field, token_field=token_field, splits=splits)
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
        name: encode_rows(
            split_rows, vocab, token_field=token_field, label_field=label_field, labels=labels, max_tokens=section["max_tokens"]
        )
        for name, split_rows in rows.items()
    }
    return TaskData(vocab=vocab, labels=labels, splits=encoded, embedding=embedding, coverage=coverage)


# -------------------------------------------------------------------- model
def model_args_for(
    section: dict, *, vocab_size: int, embedding_dim: int, num_classes: int, padding_index: int, unk_index: int = 1
) -> dict[str, Any]:
    """The ``AttentionClassifier`` keyword arguments (``config.json``'s model_args) for a config section."""
    keys = ("hidden_size", "num_layers", "cell", "bidirectional_merge", "attention", "attention_size", "dropout")
    return {
        "vocab_size": vocab_size,
        "embedding_dim": embedding_dim,
        "num_classes": num_classes,
        **{key: section[key] for key in keys},
        "embedding_dropout": section.get("embedding_dropout", 0.0),
        "word_dropout": section.get("word_dropout", 0.0),
        "freeze_embeddings": section["freeze_embeddings"],
        "padding_index": padding_index,
        "unk_index": unk_index,
    }


def build_model(section: dict, data: TaskData) -> tuple[AttentionClassifier, dict[str, Any]]:
    embedding_dim = data.embedding.shape[1] if data.embedding is not None else section.get("embedding_dim", RANDOM_EMBEDDING_DIM)
    args = model_args_for(
        section,
        vocab_size=len(data.vocab),
        embedding_dim=embedding_dim,
        num_classes=len(data.labels),
        padding_index=data.vocab.pad_index,
        unk_index=data.vocab.unk_index,
    )
    model = AttentionClassifier(**args)
    if data.embedding is not None:
        model.load_pretrained_embeddings(data.embedding)
    return model, args


def class_weights(labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights N / (C * n_c), mean about 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return (len(labels) / (num_classes * np.maximum(counts, 1.0))).astype(np.float32)


def make_steps(model: nn.Module, section: dict, *, device: torch.device) -> tuple[StepRunner, RatePlan]:
    """AdamW (fused on CUDA: one kernel instead of a loop of small ones) over the parameter groups of
    :func:`pipeline.training.ulmfit.param_groups_and_plan`, and the plan that sets the groups' rates per step and
    freezes or unfreezes them per epoch (init = pretrained)."""
    groups, plan = param_groups_and_plan(model, section)
    optimizer = torch.optim.AdamW(groups, lr=section["learning_rate"], weight_decay=section["weight_decay"], fused=device.type == "cuda")
    return StepRunner(model=model, optimizer=optimizer, device=device, amp=section["amp"], grad_clip=section["grad_clip"]), plan


def train_step(model: AttentionClassifier, batch: Batch, *, loss_fn: nn.Module, steps: StepRunner) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward/backward/update. Returns (loss, logits (B, C)) still on the device (no host sync)."""
    with steps.autocast():
        logits, _ = model(batch.token_ids, batch.lengths)  # (B, C)
        loss = loss_fn(logits.float(), batch.labels)
    steps.step(loss)
    return loss.detach(), logits.detach()


# ----------------------------------------------------------------- training
class ClassifierTraining:
    """The classifier's part of the training loop: an epoch over length buckets, dev macro-F1."""

    def __init__(
        self, *, model: AttentionClassifier, data: TaskData, section: dict, device: torch.device, name: str, plan: RatePlan
    ) -> None:
        self.model = model
        self.plan = plan  # each parameter group's rate per step, and which groups train in an epoch
        self.name = name
        self.section = section
        self.train, self.dev = data.splits["train"], data.splits["dev"]
        self.num_classes = len(data.labels)
        self.seed, self.batch_size, self.device = section["seed"], section["batch_size"], device
        self.weights = class_weights(self.train.labels, num_classes=self.num_classes) if section["class_weights"] else None
        self.loss_fn = nn.CrossEntropyLoss(weight=torch.as_tensor(self.weights, device=device) if self.weights is not None else None)
        # Dev loss is always unweighted, so it is comparable across class-weight settings.
        self.dev_loss_fn = nn.CrossEntropyLoss()
        # Data-parallel (torchrun): the DDP-wrapped model for the training forward, and a summed loss
        # that each rank scales by the global batch (see pipeline.training.distributed).
        self.dist = distributed.current()
        self.forward_model = distributed.wrap(model, device)
        self.sum_loss_fn = nn.CrossEntropyLoss(weight=self.loss_fn.weight, reduction="sum")

    def train_epoch(self, epoch: int, steps: StepRunner) -> TrainStats:
        torch.manual_seed(self.seed + epoch)  # dropout masks of this epoch
        self.plan.start_epoch(steps.optimizer, epoch)  # gradual unfreezing: the groups that train this epoch
        rng = np.random.default_rng([self.seed, epoch])
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        batches = bucket_batches(self.train.lengths, batch_size=self.batch_size, shuffle=True, rng=rng)
        if self.dist.active:
            return self._train_epoch_distributed(epoch, steps, batches)
        for step, batch in enumerate(
            steps.progress(iterate_batches(self.train, batches, device=self.device), total=len(batches), desc=f"{self.name} epoch {epoch}")
        ):
            self.plan.before_step(steps.optimizer, epoch=epoch, step=step, steps_per_epoch=len(batches))
            loss, logits = train_step(self.model, batch, loss_fn=self.loss_fn, steps=steps)
            loss_sum += loss * len(batch.indices)
            correct += (logits.argmax(dim=-1) == batch.labels).sum()
        train_loss = float(loss_sum.item()) / len(self.train)  # the epoch's only host sync
        train_accuracy = float(correct.item()) / len(self.train)
        return TrainStats(
            record={"train_loss": round(train_loss, 5), "train_accuracy": round(train_accuracy, 5)}, items=len(self.train), unit="sentences"
        )

    def _train_epoch_distributed(self, epoch: int, steps: StepRunner, batches: list[np.ndarray]) -> TrainStats:
        """The epoch of one rank: its rows of every global batch, the loss scaled so that DDP's gradient
        average is the gradient of the global batch's mean loss; the epoch figures summed over the ranks."""
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        weights = self.weights
        for step, indices in enumerate(
            steps.progress(batches, total=len(batches), desc=f"{self.name} epoch {epoch} rank {self.dist.rank}")
        ):
            self.plan.before_step(steps.optimizer, epoch=epoch, step=step, steps_per_epoch=len(batches))
            local, share = distributed.shard(indices, self.dist)
            labels = self.train.labels[indices]
            normaliser = float(weights[labels].sum()) if weights is not None else float(len(indices))  # the global batch's
            batch = next(iterate_batches(self.train, [local], device=self.device))
            with steps.autocast():
                logits, _ = self.forward_model(batch.token_ids, batch.lengths)  # (b, C): this rank's rows
                summed = self.sum_loss_fn(logits.float(), batch.labels)
            steps.step(summed * (share * self.dist.world / normaliser))
            loss_sum += summed.detach().double() * (share * len(indices) / normaliser)  # this rank's part of mean * count
            correct += (logits.detach().argmax(dim=-1) == batch.labels).sum() * int(share)
        distributed.all_reduce_sum(loss_sum, correct)
        record = {
            "train_loss": round(float(loss_sum.item()) / len(self.train), 5),
            "train_accuracy": round(float(correct.item()) / len(self.train), 5),
        }
        return TrainStats(record=record, items=len(self.train), unit="sentences")

    def evaluate(self, epoch: int, steps: StepRunner) -> DevStats:
        out = predict_split(self.model, self.dev, device=self.device, amp=steps.amp, loss_fn=self.dev_loss_fn)
        f1 = macro_f1(self.dev.labels, out["predictions"], num_classes=self.num_classes)
        loss = out["loss"]
        record = {
            "dev_loss": round(loss, 5) if loss is not None and math.isfinite(loss) else None,
            "dev_accuracy": round(accuracy(self.dev.labels, out["predictions"]), 5),
            "dev_macro_f1": round(f1, 5),
        }
        return DevStats(record=record, value=f1)

    def on_plateau(self, steps: StepRunner) -> None:
        """Nothing: the classifier keeps its learning rate."""


def _training_metrics(
    *, task: str, section: dict, data: TaskData, training: ClassifierTraining, loop_metrics: dict, pretrained: dict | None
) -> dict[str, Any]:
    """The model directory's metrics.json (before its config): the loop's figures and what was trained on."""
    weights = training.weights
    return {
        "task": task,
        "labels": data.labels,
        **loop_metrics,
        "train_sentences": len(training.train),
        "dev_sentences": len(training.dev),
        "vocab_size": len(data.vocab),
        "embedding_init": section["embedding_init"],
        "init": section.get("init", "scratch"),
        "pretrained": pretrained,
        "schedule": section.get("schedule", "constant"),
        # ULMFiT's steps b and c, with init = pretrained
        "fine_tuning": {key: section.get(key) for key in ("target_lm_epochs", "unfreezing", "lr_decay")} if pretrained else None,
        "embedding_coverage": round(data.coverage, 4) if data.coverage is not None else None,
        "class_weights": [round(float(w), 4) for w in weights] if weights is not None else None,
    }


def train_classifier(
    *,
    task: str,
    section: dict,
    data: TaskData,
    work_dir: Path,
    resume: bool,
    signature: str,
    lm_dir: Path | None = None,
    name: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainedModel:
    """Train on ``data.splits['train']`` with early stopping on ``data.splits['dev']`` macro-F1.

    ``lm_dir`` (init = pretrained): the ``pretrain_lm`` output the embedding and LSTM start from.
    ``name``: how logs and progress bars call the run (default: the task).
    ``on_epoch``: called with each epoch's log record (``dev_macro_f1`` ...), e.g. a tuning trial's pruner.
    """
    name = name or task
    device = pick_device(section["device"])
    seed_everything(section["seed"])  # before the model: its initial weights come from the seed
    model, model_args = build_model(section, data)
    pretrained = None
    if lm_dir is not None:
        from pipeline.training.pretrain import init_classifier_from_dir

        pretrained = init_classifier_from_dir(model, data.vocab, lm_dir=lm_dir, token_field=section["token_field"])
    model.to(device)
    steps, plan = make_steps(model, section, device=device)
    training = ClassifierTraining(model=model, data=data, section=section, device=device, name=name, plan=plan)
    logger.info(
        "%s: %d train / %d dev sentences, vocabulary %d, %s on %s%s",
        name,
        len(training.train),
        len(training.dev),
        len(data.vocab),
        section["cell"],
        device,
        " (AMP fp16)" if steps.amp else "",
    )
    stopping = EarlyStopping(monitor="dev_macro_f1", mode="max", patience=section["patience"])
    settings = LoopSettings(
        name=name, epochs=section["epochs"], stopping=stopping, work_dir=Path(work_dir), signature=signature, resume=resume
    )
    settings.on_epoch = on_epoch
    result = train(training, steps=steps, settings=settings)
    return TrainedModel(
        model=model,
        architecture=ARCHITECTURE,
        model_args=model_args,
        vocab=data.vocab,
        metrics=_training_metrics(
            task=task, section=section, data=data, training=training, loop_metrics=result.metrics, pretrained=pretrained
        ),
        records=result.records,
        labels=data.labels,
        extra={"token_field": section["token_field"], "max_tokens": section["max_tokens"], "task": task},
    )


# -------------------------------------------------------------------- stages
def train_task_stage(ctx) -> dict[str, Any]:
    """Stage ``train_<task>``: the task's classifier, with [classifier] + the task's overrides.

    With ``seeds`` > 1 it trains one model per seed; the median-dev one is the model directory and
    every seed's model goes to its ``seeds/<seed>/`` (evaluation scores them all).
    """
    from pipeline.paths import classifier_dir

    task = ctx.stage.task
    spec = ctx.config.task(task)
    section = ctx.section  # [classifier] + the task's overrides
    tokens_path = ctx.input(task_rows_file(ctx.config, task))
    vectors_file = pretrained_vectors_file(ctx, section_name=f"tasks.{task}.classifier", source=section["embedding_init"])
    labels = task_labels(ctx.project_dir, task=task, section=spec, tokens_path=tokens_path)
    data = prepare_task_data(
        tokens_path=tokens_path, labels=labels, label_field=label_field(spec), section=section, vectors_file=vectors_file
    )
    lm_dir = ctx.input(lm_dir_for(ctx.config, task)) if section["init"] == "pretrained" else None
    inputs = {
        "tokens": sha256_file(tokens_path),
        "vectors": sha256_file(vectors_file) if vectors_file else None,
        "pretrained": [sha256_file(lm_dir / direction / "model.safetensors") for direction in ("forward", "backward")] if lm_dir else None,
    }
    trained = train_seeds(
        section,
        work_dir=Path(ctx.work_dir),
        name=task,
        train_one=lambda *, section, work_dir, name: train_classifier(
            task=task,
            section=section,
            data=data,
            work_dir=work_dir,
            resume=ctx.resume,
            signature=checkpoint_signature(training_settings(section), task=task, **inputs),
            lm_dir=lm_dir,
            name=name,
        ),
    )
    config = {**section.to_dict(), "task": spec.to_dict()}
    split_mode = None
    if not spec.is_knbc:  # tokenized by prepare_<task>, which records its split mode
        from pipeline.io import read_json
        from pipeline.paths import task_stats

        split_mode = read_json(ctx.input(task_stats(task))).get("split_mode")
    summary = publish_seeds(
        ctx, classifier_dir(task), trained, token_field=section["token_field"], monitor="dev_macro_f1", config=config, split_mode=split_mode
    )
    return {**summary, **calibrate_trained(ctx, classifier_dir(task), trained, dev_split=data.splits["dev"], section=section)}
