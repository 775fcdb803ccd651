"""ONE training loop for every model: epochs, early stopping, resume, AMP, clipping, checkpoints, logs.

What differs between models (how an epoch trains, what the dev metric is, what to do
when it stops improving) comes in as a *task* object; the loop owns everything else:

    task.model                         the nn.Module being trained
    task.train_epoch(epoch, steps)  -> TrainStats(record, items, unit)
    task.evaluate(epoch, steps)     -> DevStats(record, value)   value: the raw monitored metric
    task.on_plateau(steps)             after an epoch without improvement (e.g. learning-rate decay)

``steps`` (:class:`StepRunner`) is the optimisation step every task uses: autocast
(fp16 on CUDA when AMP is on), GradScaler, gradient-norm clipping, the optimizer,
and a progress bar over batches.

Each epoch ends with one record in the JSONL epoch log and an atomic checkpoint
(``torch.load(weights_only=True)``) holding the model, optimizer, scaler, best weights,
loop state, epoch records and the RNG states. A run with ``resume`` continues from
it when the checkpoint's signature matches (settings except ``RESUMABLE_KEYS``, and
the contents of the inputs); ``epochs`` and ``patience`` may be raised, so a finished
run can be extended. Resuming repeats exactly what an uninterrupted run does (on CPU;
cuDNN kernels are not bit-deterministic): tasks that reseed per epoch keep doing so,
and tasks that carry the global torch RNG across epochs get it back from the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.io import sha256_text
from pipeline.training import distributed
from pipeline.training.checkpoint import EpochLog, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "train_log.jsonl"
# Settings that may change between an interrupted run and its resume: they change how
# long or where training runs, not what one epoch computes.
RESUMABLE_KEYS = ("epochs", "patience", "device", "amp")


# ------------------------------------------------------------------- pieces
@dataclass(frozen=True)
class EarlyStopping:
    """Stop after ``patience`` epochs in which the dev metric ``monitor`` did not improve by more than ``min_delta``."""

    monitor: str
    mode: str = "max"  # "max": higher is better (macro-F1); "min": lower is better (perplexity)
    patience: int = 1
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ConfigError(
                "E109",
                f"EarlyStopping.mode must be 'max' or 'min', got {self.mode!r}.",
                hint="Use 'max' for scores such as macro-F1, 'min' for losses and perplexities.",
            )

    @property
    def worst(self) -> float:
        return -math.inf if self.mode == "max" else math.inf

    def improved(self, value: float | None, best: float) -> bool:
        if value is None or math.isnan(value):
            return False
        return value > best + self.min_delta if self.mode == "max" else value < best - self.min_delta


class StepRunner:
    """One optimisation step, the same for every task: autocast, GradScaler, clipping, optimizer."""

    def __init__(
        self, *, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, amp: bool = False, grad_clip: float = 0.0
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        # fp16 autocast + loss scaling only where it pays and is supported: CUDA
        self.amp = bool(amp) and device.type == "cuda"
        self.grad_clip = grad_clip
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def autocast(self):
        """Context for the forward pass (a no-op without AMP)."""
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)

    def step(self, loss: torch.Tensor) -> None:
        """Backward ``loss``, clip the gradient norm, update. Without AMP the scaler steps are no-ops."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    @property
    def learning_rate(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def progress(self, batches: Iterable, *, total: int | None = None, desc: str = "") -> Iterable:
        """A progress bar over batches; ``disable=None`` keeps it silent when stderr is not a terminal (CI logs)."""
        from tqdm import tqdm

        return tqdm(batches, total=total, desc=desc, unit="batch", leave=False, disable=None)


@dataclass
class TrainStats:
    """What ``train_epoch`` reports: its log fields and how many ``unit``s it processed (throughput)."""

    record: dict[str, Any]
    items: int
    unit: str


@dataclass
class DevStats:
    """What ``evaluate`` reports: its log fields and the raw (unrounded) value early stopping compares."""

    record: dict[str, Any]
    value: float | None


class TrainingTask(Protocol):
    model: nn.Module

    def train_epoch(self, epoch: int, steps: StepRunner) -> TrainStats: ...

    def evaluate(self, epoch: int, steps: StepRunner) -> DevStats: ...

    def on_plateau(self, steps: StepRunner) -> None: ...


@dataclass
class LoopSettings:
    name: str  # prefix of log lines and the progress bar
    epochs: int
    stopping: EarlyStopping
    work_dir: Path
    signature: str  # what a checkpoint must match to be resumed (see checkpoint_signature)
    resume: bool = False
    # Called with each epoch's record once it is logged and checkpointed (``jpipe tune`` reports dev macro-F1 to its
    # pruner here); an exception it raises stops the run.
    on_epoch: Callable[[dict[str, Any]], None] | None = None


@dataclass
class LoopState:
    """The loop's own counters, saved in every checkpoint."""

    epoch: int = 0
    best_value: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    early_stopped: bool = False
    train_seconds: float = 0.0


@dataclass
class LoopResult:
    records: list[dict]
    metrics: dict[str, Any]
    best_record: dict[str, Any] = field(default_factory=dict)


def checkpoint_signature(section: dict, **inputs: Any) -> str:
    """Hash of the settings (except ``RESUMABLE_KEYS``) and of ``inputs`` (file hashes, vocabulary, task)."""
    settings = {key: value for key, value in dict(section).items() if key not in RESUMABLE_KEYS}
    return sha256_text(json.dumps({"settings": settings, **inputs}, sort_keys=True, ensure_ascii=False))


def state_to_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state_dict (best weights must not follow later updates)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in module.state_dict().items()}


def _rng_states(device: torch.device) -> dict[str, Any]:
    """Every global RNG a task may draw from, as tensors and plain data (weights_only-loadable)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _restore_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if device.type == "cuda" and states.get("cuda") is not None:
        torch.cuda.set_rng_state(states["cuda"].cpu())
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------- loop
class TrainingLoop:
    """Runs ``task`` epoch by epoch (see the module docstring); ``run()`` leaves the best weights in ``task.model``."""

    def __init__(self, task: TrainingTask, steps: StepRunner, settings: LoopSettings) -> None:
        self.task = task
        self.steps = steps
        self.settings = settings
        self.checkpoint_path = Path(settings.work_dir) / CHECKPOINT_NAME
        self.state = LoopState(best_value=settings.stopping.worst)
        self.best_state = state_to_cpu(task.model)
        self.records: list[dict] = []
        self.resumed_from: int | None = None
        self.main = distributed.current().main  # True unless this is rank > 0 of a data-parallel run

    def run(self) -> LoopResult:
        Path(self.settings.work_dir).mkdir(parents=True, exist_ok=True)
        if self.settings.resume:
            self._resume()
        # The JSONL log is rewritten from the checkpoint's records, so it matches the resumed
        # state even when the process died between the checkpoint and the log line.
        # Under data-parallel training only rank 0 writes the log and the checkpoints.
        log = EpochLog(Path(self.settings.work_dir) / LOG_NAME, append=False) if self.main else None
        for record in self.records if log else ():
            log.write(record)
        started = time.perf_counter()
        while not self.state.early_stopped and self.state.epoch < self.settings.epochs:
            record = self._run_epoch(self.state.epoch + 1)
            if log:
                self._save_checkpoint()
                log.write(record)
            if self.settings.on_epoch is not None:
                self.settings.on_epoch(record)
        self.task.model.load_state_dict(self.best_state)
        self.task.model.eval()
        return self._result(seconds_this_run=time.perf_counter() - started)

    def _resume(self) -> None:
        name, path = self.settings.name, self.checkpoint_path
        if not path.exists():
            logger.info("%s: resume asked, but no checkpoint in %s; training from scratch.", name, path.parent)
            return
        checkpoint = load_checkpoint(path, device="cpu")
        if checkpoint.get("signature") != self.settings.signature:
            logger.warning("%s: the checkpoint in %s was made with other settings or inputs; starting from scratch.", name, path.parent)
            return
        self.task.model.load_state_dict(checkpoint["model"])
        self.steps.optimizer.load_state_dict(checkpoint["optimizer"])
        if checkpoint.get("scaler") and self.steps.amp:
            self.steps.scaler.load_state_dict(checkpoint["scaler"])
        self.best_state = checkpoint["best_state"]
        self.state = LoopState(**checkpoint["state"])
        # recomputed, not restored: a larger patience lets an early-stopped run continue
        self.state.early_stopped = self.state.bad_epochs >= self.settings.stopping.patience
        self.records = list(checkpoint["records"])
        _restore_rng_states(checkpoint["rng"], self.steps.device)
        self.resumed_from = self.state.epoch
        logger.info(
            "%s: resuming after epoch %d (best %s %.4f at epoch %d)",
            name,
            self.state.epoch,
            self.settings.stopping.monitor,
            self.state.best_value,
            self.state.best_epoch,
        )

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        started = time.perf_counter()
        learning_rate = self.steps.learning_rate  # the rate this epoch trains with (on_plateau may change it after)
        train = self.task.train_epoch(epoch, self.steps)
        if self.steps.device.type == "cuda":
            torch.cuda.synchronize()  # time the device work, not just its launch
        train_seconds = time.perf_counter() - started
        dev = self.task.evaluate(epoch, self.steps)
        improved = self._update_state(epoch, dev.value, train_seconds)
        record = {
            "epoch": epoch,
            **train.record,
            **dev.record,
            "learning_rate": learning_rate,
            "best": improved,
            "seconds": round(time.perf_counter() - started, 3),
            "train_seconds": round(train_seconds, 3),
            f"train_{train.unit}_per_second": round(train.items / max(train_seconds, 1e-9), 1),
            "device": self.steps.device.type,
        }
        self.records.append(record)
        fields = " ".join(f"{key} {value}" for key, value in {**train.record, **dev.record}.items())
        if not self.main:
            return record
        logger.info("%s epoch %d: %s%s (%.1fs)", self.settings.name, epoch, fields, " *" if improved else "", record["seconds"])
        if self.state.early_stopped:
            logger.info(
                "%s: early stop after epoch %d (no %s gain for %d epochs)",
                self.settings.name,
                epoch,
                self.settings.stopping.monitor,
                self.state.bad_epochs,
            )
        return record

    def _update_state(self, epoch: int, value: float | None, train_seconds: float) -> bool:
        stopping, state = self.settings.stopping, self.state
        improved = stopping.improved(value, state.best_value)
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
            self.best_state = state_to_cpu(self.task.model)
        else:
            state.bad_epochs += 1
            self.task.on_plateau(self.steps)
        state.epoch = epoch
        state.train_seconds += train_seconds
        state.early_stopped = state.bad_epochs >= stopping.patience
        return improved

    def _save_checkpoint(self) -> None:
        save_checkpoint(
            self.checkpoint_path,
            {
                "signature": self.settings.signature,
                "model": state_to_cpu(self.task.model),
                "optimizer": self.steps.optimizer.state_dict(),
                "scaler": self.steps.scaler.state_dict() if self.steps.amp else None,
                "best_state": self.best_state,
                "state": asdict(self.state),
                "records": self.records,
                "rng": _rng_states(self.steps.device),
            },
        )

    def _result(self, *, seconds_this_run: float) -> LoopResult:
        best = next((r for r in self.records if r["epoch"] == self.state.best_epoch), {})
        device = self.steps.device.type
        epoch_seconds = [r["seconds"] for r in self.records if r.get("device") == device]
        dev_fields = {key: value for key, value in best.items() if key.startswith("dev_")}
        metrics = {
            **dev_fields,  # the dev figures of the kept epoch
            "best_epoch": self.state.best_epoch,
            "epochs_run": self.state.epoch,
            "early_stopped": self.state.early_stopped,
            "resumed_from_epoch": self.resumed_from,
            "mean_epoch_seconds": round(float(np.mean(epoch_seconds)), 3) if epoch_seconds else None,
            "train_seconds_this_run": round(seconds_this_run, 1),
            "device": device,
            "amp": self.steps.amp,
        }
        return LoopResult(records=list(self.records), metrics=metrics, best_record=best)


def train(task: TrainingTask, *, steps: StepRunner, settings: LoopSettings) -> LoopResult:
    """Run :class:`TrainingLoop`; the task's model ends in eval mode with the best dev weights."""
    return TrainingLoop(task, steps, settings).run()
