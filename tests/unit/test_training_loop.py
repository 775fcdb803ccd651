"""The one training loop (pipeline.training.loop) on a toy regression model: early stopping, resume, signatures."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pipeline.training.loop as loop_module  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.training.loop import (  # noqa: E402
    CHECKPOINT_NAME,
    LOG_NAME,
    DevStats,
    EarlyStopping,
    LoopSettings,
    StepRunner,
    TrainStats,
    checkpoint_signature,
    train,
)

TIMINGS = ("seconds", "train_seconds", "train_rows_per_second")


class ToyTask:
    """Linear regression through a dropout layer. Training draws from the global torch RNG
    (dropout, label noise) and the global numpy RNG, carried across epochs, so an exact
    resume needs the RNG states of the checkpoint. ``scripted`` replaces the dev metric."""

    def __init__(self, model: nn.Module, scripted: list[float] | None = None) -> None:
        self.model = model
        self.scripted = scripted
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 4, generator=generator)  # (N, 4)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])  # (N,)
        self.plateaus = 0

    def train_epoch(self, epoch: int, steps: StepRunner) -> TrainStats:
        self.model.train()
        total = 0.0
        for start in steps.progress(range(0, 64, 16), total=4, desc=f"toy epoch {epoch}"):
            noise = torch.randn(16) * 0.1 + float(np.random.rand()) * 0.01
            with steps.autocast():
                prediction = self.model(self.x[start : start + 16]).squeeze(-1)  # (16,)
            loss = ((prediction.float() - self.y[start : start + 16] - noise) ** 2).mean()
            steps.step(loss)
            total += float(loss.detach())
        return TrainStats(record={"train_loss": round(total / 4, 6)}, items=64, unit="rows")

    def evaluate(self, epoch: int, steps: StepRunner) -> DevStats:
        if self.scripted is not None:
            value = self.scripted[epoch - 1]
        else:
            self.model.eval()
            with torch.no_grad():
                value = float(((self.model(self.x).squeeze(-1) - self.y) ** 2).mean())
        return DevStats(record={"dev_loss": value}, value=value)

    def on_plateau(self, steps: StepRunner) -> None:
        self.plateaus += 1
        for group in steps.optimizer.param_groups:
            group["lr"] *= 0.5


def run(task, steps, settings):
    return train(task, steps=steps, settings=settings)


def make_run(work_dir, *, epochs=6, patience=10, mode="min", min_delta=0.0, scripted=None, signature="toy", resume=False, seed=3):
    """A fresh 'process': seeded model, optimizer, task and loop settings."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
    steps = StepRunner(
        model=model, optimizer=torch.optim.Adam(model.parameters(), lr=0.05), device=torch.device("cpu"), amp=True, grad_clip=1.0
    )
    task = ToyTask(model, scripted)
    stopping = EarlyStopping(monitor="dev_loss", mode=mode, patience=patience, min_delta=min_delta)
    settings = LoopSettings(name="toy", epochs=epochs, stopping=stopping, work_dir=work_dir, signature=signature, resume=resume)
    return task, steps, settings


def without_timings(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key not in TIMINGS} for record in records]


def test_early_stopping_in_max_mode(tmp_path):
    # gains at epochs 1, 2 and 4; 0.6 again (epoch 3) is no gain; two bad epochs after 4 stop it
    task, steps, settings = make_run(tmp_path, epochs=10, patience=2, mode="max", scripted=[0.5, 0.6, 0.6, 0.7, 0.65, 0.69, 0.9])
    result = run(task, steps, settings)
    assert [r["best"] for r in result.records] == [True, True, False, True, False, False]
    assert result.metrics["best_epoch"] == 4 and result.metrics["epochs_run"] == 6 and result.metrics["early_stopped"] is True
    assert result.metrics["dev_loss"] == 0.7  # the kept epoch's dev figures
    assert task.plateaus == 3


def test_early_stopping_in_min_mode_with_min_delta(tmp_path):
    # epoch 3 improves by less than min_delta: not a gain
    task, steps, settings = make_run(
        tmp_path, epochs=10, patience=2, mode="min", min_delta=0.01, scripted=[3.0, 2.0, 1.995, 1.5, 1.6, 1.7, 0.1]
    )
    result = run(task, steps, settings)
    assert [r["best"] for r in result.records] == [True, True, False, True, False, False]
    assert result.metrics["best_epoch"] == 4 and result.metrics["early_stopped"] is True
    # on_plateau halves the rate after epochs 3, 5 (and 6); each record shows the rate it trained with
    assert [r["learning_rate"] for r in result.records] == [0.05, 0.05, 0.05, 0.025, 0.025, 0.0125]


def test_running_out_of_epochs_is_not_an_early_stop(tmp_path):
    task, steps, settings = make_run(tmp_path, epochs=3, patience=5)
    result = run(task, steps, settings)
    assert result.metrics["epochs_run"] == 3 and result.metrics["early_stopped"] is False
    assert result.metrics["amp"] is False  # AMP is asked for but CUDA-only
    assert result.metrics["resumed_from_epoch"] is None and result.metrics["mean_epoch_seconds"] > 0
    assert without_timings(result.records) == without_timings([json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()])


def test_best_weights_are_restored(tmp_path):
    task, steps, settings = make_run(tmp_path, epochs=4, patience=5, mode="min", scripted=[3.0, 1.0, 2.0, 2.5])
    snapshots = []
    real_update = loop_module.TrainingLoop._update_state

    def remember(self, epoch, value, train_seconds):
        snapshots.append({k: v.clone() for k, v in self.task.model.state_dict().items()})
        return real_update(self, epoch, value, train_seconds)

    loop_module.TrainingLoop._update_state = remember
    try:
        run(task, steps, settings)
    finally:
        loop_module.TrainingLoop._update_state = real_update
    for name, tensor in task.model.state_dict().items():
        assert torch.equal(tensor, snapshots[1][name])  # epoch 2 had the best dev value
    assert not task.model.training


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    straight_task, steps, settings = make_run(tmp_path / "straight", epochs=5)
    straight = run(straight_task, steps, settings)

    real_save = loop_module.save_checkpoint

    def crash_after_epoch_2(path, payload):
        real_save(path, payload)
        if payload["state"]["epoch"] == 2:
            raise KeyboardInterrupt("simulated interruption after epoch 2")

    monkeypatch.setattr(loop_module, "save_checkpoint", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt, match="simulated interruption"):
        run(*make_run(tmp_path / "interrupted", epochs=5))
    monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
    # The checkpoint holds tensors and plain data only.
    checkpoint = torch.load(tmp_path / "interrupted" / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["state"]["epoch"] == 2 and len(checkpoint["records"]) == 2

    resumed_task, steps, settings = make_run(tmp_path / "interrupted", epochs=5, resume=True)
    resumed = run(resumed_task, steps, settings)
    assert resumed.metrics["resumed_from_epoch"] == 2 and resumed.metrics["epochs_run"] == 5
    assert without_timings(resumed.records) == without_timings(straight.records)
    for name, tensor in straight_task.model.state_dict().items():
        assert torch.equal(resumed_task.model.state_dict()[name], tensor), name
    log = [json.loads(line) for line in (tmp_path / "interrupted" / LOG_NAME).read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]


def test_epochs_and_patience_may_be_raised_on_resume(tmp_path):
    scripted = [1.0, 2.0, 3.0, 0.5, 0.4]
    first = run(*make_run(tmp_path, epochs=5, patience=2, scripted=scripted))
    assert first.metrics["early_stopped"] and first.metrics["epochs_run"] == 3
    task, steps, settings = make_run(tmp_path, epochs=5, patience=2, scripted=scripted, resume=True)
    assert run(task, steps, settings).metrics["epochs_run"] == 3  # same patience: still stopped
    task, steps, settings = make_run(tmp_path, epochs=5, patience=4, scripted=scripted, resume=True)
    longer = run(task, steps, settings)
    assert longer.metrics["resumed_from_epoch"] == 3 and longer.metrics["epochs_run"] == 5 and longer.metrics["best_epoch"] == 5


def test_a_checkpoint_of_another_signature_is_ignored(tmp_path, caplog):
    run(*make_run(tmp_path, epochs=2, signature="settings-a"))
    caplog.set_level("WARNING")
    result = run(*make_run(tmp_path, epochs=2, signature="settings-b", resume=True))
    assert "other settings or inputs; starting from scratch" in caplog.text
    assert result.metrics["resumed_from_epoch"] is None and [r["epoch"] for r in result.records] == [1, 2]


def test_signature_ignores_resumable_keys_only():
    section = {"epochs": 3, "patience": 2, "device": "cpu", "amp": True, "hidden_size": 8}
    same = checkpoint_signature({**section, "epochs": 9, "patience": 5, "device": "cuda", "amp": False}, tokens="abc")
    assert checkpoint_signature(section, tokens="abc") == same
    assert checkpoint_signature({**section, "hidden_size": 9}, tokens="abc") != same
    assert checkpoint_signature(section, tokens="abd") != same


def test_early_stopping_mode_is_checked():
    with pytest.raises(ConfigError, match="E109"):
        EarlyStopping(monitor="dev_loss", mode="lowest")
