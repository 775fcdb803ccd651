"""Data-parallel training (torchrun, gloo on CPU): 2 processes match 1 process with the same global batch,
rank 0 alone writes, and a run killed mid-training resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pipeline.training.distributed import Dist, shard  # noqa: E402
from tests.conftest import fast_overrides, write_tiny_project  # noqa: E402

WORKER = Path(__file__).with_name("ddp_worker.py")
# No dropout of any kind: each rank would draw other masks than the single process does.
SETTINGS = fast_overrides(
    "topic", "dropout=0.0", "embedding_dropout=0.0", "word_dropout=0.0", "class_weights=true", "batch_size=15", "epochs=10", "patience=10"
)


def torchrun(project: Path, *args: str, nproc: int = 2, wait: bool = True):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER), str(project)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen([*command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def single(project: Path, *args: str) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run([sys.executable, str(WORKER), str(project), *args], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def train_log(project: Path) -> list[dict]:
    return [json.loads(line) for line in (project / "models/classifier/topic/train_log.jsonl").read_text(encoding="utf-8").splitlines()]


def weights(project: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(project / "models/classifier/topic/model.safetensors")


def assert_same_training(one: Path, two: Path) -> None:
    """The same loss, accuracy and dev figures epoch by epoch, and the same weights, within float tolerance."""
    first, second = train_log(one), train_log(two)
    assert [r["epoch"] for r in first] == [r["epoch"] for r in second] and len(first) >= 2
    for a, b in zip(first, second, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=2e-5)
        assert b["train_accuracy"] == pytest.approx(a["train_accuracy"], abs=1e-9)
        assert b["dev_macro_f1"] == pytest.approx(a["dev_macro_f1"], abs=1e-9)
    reference, other = weights(one), weights(two)
    assert reference.keys() == other.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(other[name], tensor, atol=1e-4, rtol=1e-4, msg=name)


def test_shard_splits_a_global_batch_into_disjoint_strided_parts():
    indices = torch.arange(7).numpy() * 10
    parts = [shard(indices, Dist(rank=r, world=3)) for r in range(3)]
    assert [list(p) for p, _ in parts] == [[0, 30, 60], [10, 40], [20, 50]] and all(w == 1.0 for _, w in parts)
    lone, weight = shard(indices[:1], Dist(rank=1, world=2))  # a batch of 1 leaves rank 1 without rows
    assert list(lone) == [0] and weight == 0.0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, batch 15, 10 epochs."""
    project = write_tiny_project(tmp_path_factory.mktemp("ddp") / "single")
    single(project, *SETTINGS)
    return project


def test_two_gloo_processes_train_like_one_process_with_the_same_global_batch(reference, tmp_path):
    project = write_tiny_project(tmp_path / "ddp")
    torchrun(project, *SETTINGS)
    assert_same_training(reference, project)
    lock = json.loads((project / "jpipe.lock").read_text(encoding="utf-8"))
    assert list(lock["stages"]) == ["train_topic"]  # rank 0 wrote the lock entry, once
    assert not list((project / ".jpipe" / "staging").glob("*"))  # no rank left a staging directory


def test_a_ddp_run_killed_mid_training_resumes_from_its_checkpoint(reference, tmp_path):
    project = write_tiny_project(tmp_path / "killed")
    checkpoint = project / ".jpipe" / "work" / "train_topic" / "checkpoint.pt"
    run = torchrun(project, *SETTINGS, wait=False)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert checkpoint.exists() and run.poll() is None, "the run ended before its first checkpoint"
    finally:
        ranks = children(run.pid)  # torchrun starts each rank in a session of its own
        for pid in ranks:
            os.kill(pid, signal.SIGKILL)  # both ranks die mid-epoch, as on a lost node
        run.wait(60)  # torchrun sees its workers die and gives up
    assert len(ranks) == 2 and run.returncode != 0
    saved = torch.load(checkpoint, weights_only=True)["state"]["epoch"]
    assert 1 <= saved < 10 and not (project / "models" / "classifier" / "topic").exists()
    torchrun(project, *SETTINGS, "--resume")
    metrics = json.loads((project / "models/classifier/topic/metrics.json").read_text(encoding="utf-8"))
    assert metrics["resumed_from_epoch"] == saved and metrics["epochs_run"] == 10
    assert_same_training(reference, project)  # as if never interrupted
