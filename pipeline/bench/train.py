"""``jpipe bench train``: training-step throughput of the classifier against a bare recurrent layer
(``--model lm``: pretrain_lm's language model, adaptive vs full softmax; ``--model extractor``: the
opinion extractor, packed teacher forcing vs the step-by-step reference).

Both measurements run the same padded batch shapes in the same precision: the
classifier's full training step (``pipeline.training.classifier.train_step``: forward,
loss, backward, clipping, AdamW) and a bare bidirectional ``nn.LSTM``/``nn.GRU``
(cuDNN on GPU) forward + backward. Their ratio says how much the embedding, attention
and optimizer cost on top of the recurrent layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.models.batching import Batch, EncodedSplit, bucket_batches, iterate_batches
from pipeline.models.runtime import pick_device, seed_everything
from pipeline.models.vocab import Vocab
from pipeline.training.classifier import TaskData, build_model, make_steps, prepare_task_data, train_step, vectors_path

WARMUP_STEPS = 5  # cuDNN plans and the allocator settle in these; they are not timed


def _synthetic_split(*, count: int, vocab_size: int, num_classes: int, seed: int) -> EncodedSplit:
    """KNBC-like sentence lengths (log-normal, median ~14 tokens) when no tokens file exists."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=2.6, sigma=0.5, size=count).astype(np.int64), 1, 120)
    sequences = [rng.integers(2, vocab_size, size=length, dtype=np.int64) for length in lengths]
    return EncodedSplit(sequences=sequences, labels=rng.integers(0, num_classes, size=count, dtype=np.int64))


def _bench_section(*, project_dir: Path, section: dict, batch_size: int | None, device: str | None) -> dict:
    """The config section with the overrides, and the pretrained width when vectors are configured."""
    section = dict(section)
    if batch_size:
        section["batch_size"] = batch_size
    if device:
        section["device"] = device
    if section["embedding_init"] != "random":
        # Same shapes as the real run: the pretrained width, random values (loading is not timed).
        header = vectors_path(Path(project_dir), source=section["embedding_init"])
        if header.exists():
            with open(header, encoding="utf-8") as handle:
                section["embedding_dim"] = int(handle.readline().split()[1])
    return section


def _bench_data(*, project_dir: Path, section: dict, task: str) -> tuple[TaskData, str]:
    """The real training split of ``task`` when the project has its tokens file, else synthetic data of its label count."""
    from pipeline.config import load_config
    from pipeline.data.tasks import label_field, task_labels, task_rows_file

    config = load_config(project_dir)
    spec = config.task(task)
    tokens_path = Path(project_dir) / task_rows_file(config, task)
    if tokens_path.exists():
        random_section = {**section, "embedding_init": "random"}
        labels = task_labels(project_dir, task=task, section=spec, tokens_path=tokens_path)
        data = prepare_task_data(
            tokens_path=tokens_path,
            labels=labels,
            label_field=label_field(spec),
            section=random_section,
            vectors_file=None,
            splits=("train",),
        )
        return data, "knbc" if spec.is_knbc else task
    labels = list(spec.labels) or ["a", "b"]
    train = _synthetic_split(count=3400, vocab_size=8000, num_classes=len(labels), seed=section["seed"])
    vocab = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(7998)])
    return TaskData(vocab=vocab, labels=labels, splits={"train": train}, embedding=None, coverage=None), "synthetic"


def _prepared_batches(train: EncodedSplit, *, section: dict, steps: int, device: torch.device) -> list[Batch]:
    """``steps`` + warm-up training batches, padded and moved once: both measurements time device work, not padding."""
    rng = np.random.default_rng(section["seed"])
    batches: list[np.ndarray] = []
    while len(batches) < steps + WARMUP_STEPS:
        batches.extend(bucket_batches(train.lengths, batch_size=section["batch_size"], shuffle=True, rng=rng))
    return list(iterate_batches(train, batches[: steps + WARMUP_STEPS], device=device))


def _timed(run_step: Callable[[Any], None], items: list, device: torch.device) -> float:
    """Seconds for ``run_step`` over ``items`` after the warm-up ones (device work finished)."""
    for item in items[:WARMUP_STEPS]:
        run_step(item)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for item in items[WARMUP_STEPS:]:
        run_step(item)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _bare_rnn_seconds(prepared: list[Batch], *, section: dict, embedding_dim: int, amp: bool, device: torch.device) -> float:
    """A bare bidirectional RNN's forward + backward on random inputs of the same (B, T, E) shapes."""
    rnn_class = nn.LSTM if section["cell"] == "lstm" else nn.GRU
    bare = rnn_class(embedding_dim, section["hidden_size"], num_layers=section["num_layers"], batch_first=True, bidirectional=True).to(
        device
    )
    inputs = [torch.randn(b.token_ids.shape[0], b.token_ids.shape[1], embedding_dim, device=device, requires_grad=True) for b in prepared]

    def step(x: torch.Tensor) -> None:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            out, _ = bare(x)  # (B, T, 2H)
        out.float().sum().backward()

    return _timed(step, inputs, device)


def benchmark_training(
    *, project_dir: Path, section: dict, task: str = "topic", steps: int = 50, batch_size: int | None = None, device: str | None = None
) -> dict[str, Any]:
    """Training-step throughput of the classifier vs a bare (cuDNN on GPU) bidirectional RNN
    forward + backward on the same padded shapes, both in the same precision.

    Batches are the real training batches of ``task`` (length-bucketed) when the
    project has a tokens file, else synthetic KNBC-like lengths.
    """
    section = _bench_section(project_dir=project_dir, section=section, batch_size=batch_size, device=device)
    dev = pick_device(section["device"])
    seed_everything(section["seed"])
    data, source = _bench_data(project_dir=project_dir, section=section, task=task)
    model, _ = build_model(section, data)
    model.to(dev).train()
    runner, _ = make_steps(model, section, device=dev)  # constant rates: the bench times steps
    loss_fn = nn.CrossEntropyLoss()
    prepared = _prepared_batches(data.splits["train"], section=section, steps=steps, device=dev)
    timed = prepared[WARMUP_STEPS:]
    sentences = sum(len(b.indices) for b in timed)
    tokens = int(sum(int(b.lengths.sum()) for b in timed))
    model_seconds = _timed(lambda batch: train_step(model, batch, loss_fn=loss_fn, steps=runner), prepared, dev)
    embedding_dim = model.embedding.embedding_dim
    bare_seconds = _bare_rnn_seconds(prepared, section=section, embedding_dim=embedding_dim, amp=runner.amp, device=dev)
    model_rate, bare_rate = sentences / model_seconds, sentences / bare_seconds
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "task": task,
        "embedding_dim": embedding_dim,
        "hidden_size": section["hidden_size"],
        "freeze_embeddings": section["freeze_embeddings"],
        "data": source,
        "amp": runner.amp,
        "threads": torch.get_num_threads(),
        "batch_size": section["batch_size"],
        "steps": len(timed),
        "mean_batch_tokens": round(tokens / len(timed), 1),
        "train_step": {"sentences_per_second": round(model_rate, 1), "steps_per_second": round(len(timed) / model_seconds, 2)},
        "bare_rnn_forward_backward": {"sentences_per_second": round(bare_rate, 1), "steps_per_second": round(len(timed) / bare_seconds, 2)},
        "ratio": round(model_rate / bare_rate, 3),
    }


# ----------------------------------------------------------------- the pretraining language model
def _lm_vocab_size(project_dir: Path, default: int) -> tuple[int, str]:
    """The vocabulary size of the project's pretrained LMs when they exist, else ``default``."""
    from pipeline.paths import PRETRAINED_LM_DIR

    vocab_file = Path(project_dir) / PRETRAINED_LM_DIR / "forward" / "vocab.json"
    if vocab_file.exists():
        from pipeline.io import read_json

        return len(read_json(vocab_file)["itos"]), "the project's pretrained LMs"
    return default, "default"


def _lm_tokens_per_second(*, model_args: dict, section: dict, steps: int, device: torch.device) -> float:
    """Tokens/s of ``pretrain_lm``'s training step (forward, loss, backward, clipping, Adam) on Zipf-distributed ids."""
    from pipeline.models.language_model import LSTMLanguageModel
    from pipeline.training.loop import StepRunner

    seed_everything(section["seed"])
    model = LSTMLanguageModel(**model_args).to(device).train()
    runner = StepRunner(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=section["learning_rate"]),
        device=device,
        grad_clip=section["grad_clip"],
    )
    rng = np.random.default_rng(section["seed"])
    shape = (section["batch_size"], section["bptt"] + 1)
    ids = np.minimum(rng.zipf(1.2, size=(steps + WARMUP_STEPS, *shape)), model_args["vocab_size"] - 1)  # word frequencies are Zipfian
    batches = [torch.from_numpy(batch.astype(np.int64)).to(device) for batch in ids]

    def step(batch: torch.Tensor) -> None:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        if model.adaptive is not None:
            loss, _ = model.adaptive_loss(inputs, targets)
        else:
            logits, _ = model(inputs)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        runner.step(loss)

    seconds = _timed(step, batches, device)
    return steps * shape[0] * (shape[1] - 1) / seconds


def benchmark_lm_training(
    *, project_dir: Path, section: dict, classifier: dict, steps: int = 20, vocab_size: int = 20_000, device: str | None = None
) -> dict[str, Any]:
    """Training tokens/s of ``pretrain_lm``'s language model, with the adaptive and with the full softmax.

    Shapes: ``[pretrain_lm]`` batch_size x bptt, the classifier's hidden size and embedding width
    (300 for ja_ginza's vectors), the project's LM vocabulary size when it was pretrained.
    """
    from pipeline.models.vocab import Vocab
    from pipeline.training.pretrain import model_args_for

    section = {**section, "device": device or section["device"]}
    dev = pick_device(section["device"])
    size, source = _lm_vocab_size(project_dir, vocab_size)
    width = _bench_section(project_dir=project_dir, section=dict(classifier), batch_size=None, device=None)["embedding_dim"]
    vocab = Vocab(["<pad>", "<unk>", "</s>", *(f"w{i}" for i in range(size - 3))])
    rates = {}
    for adaptive in (True, False):
        args = model_args_for(
            vocab=vocab, embedding_dim=width, hidden_size=classifier["hidden_size"], section={**section, "adaptive_softmax": adaptive}
        )
        rates["adaptive" if adaptive else "full"] = _lm_tokens_per_second(model_args=args, section=section, steps=steps, device=dev)
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "vocab_size": size,
        "vocab_from": source,
        "embedding_dim": width,
        "hidden_size": classifier["hidden_size"],
        "batch_size": section["batch_size"],
        "bptt": section["bptt"],
        "steps": steps,
        "adaptive_softmax_tokens_per_second": round(rates["adaptive"], 1),
        "full_softmax_tokens_per_second": round(rates["full"], 1),
        "speedup": round(rates["adaptive"] / rates["full"], 2),
    }


# ----------------------------------------------------------------- the opinion extractor
def benchmark_extractor_training(*, project_dir: Path, section: dict, steps: int = 30, device: str | None = None) -> dict[str, Any]:
    """Training sentences/s of the opinion extractor on the project's KNBC batches: packed teacher forcing
    (``Seq2SeqExtractor.forward``, what train_extractor runs) against the step-by-step reference
    (``stepwise_target_log_probs``: every row runs every step with the full output distribution).
    Both: the same batches, forward + loss + backward + AdamW, no scheduled sampling."""
    from pipeline.models.seq2seq import Seq2SeqExtractor, pad_sources, pad_targets, sequence_nll, stepwise_target_log_probs
    from pipeline.paths import SENTENCES, TOKENS
    from pipeline.training.extractor import encode_examples, model_args_for, prepare_extractor_data

    dev = pick_device(device or section["device"])
    data = prepare_extractor_data(tokens_path=project_dir / TOKENS, sentences_path=project_dir / SENTENCES, section=section)
    encoded = encode_examples(data.splits["train"], data, section)
    rng = np.random.default_rng(section["seed"])
    order: list[np.ndarray] = []
    while len(order) < steps + WARMUP_STEPS:  # epochs as train_extractor draws them, as many as needed
        order.extend(bucket_batches(encoded.bucket_keys(rng), batch_size=section["batch_size"], shuffle=True, rng=rng))
    order = order[: steps + WARMUP_STEPS]
    batches = [
        (
            pad_sources([encoded.items[i] for i in indices], target_vocab_size=len(data.target_vocab), device=dev),
            pad_targets([encoded.targets[i] for i in indices], device=dev),
        )
        for indices in order
    ]
    paths = {
        "packed": lambda model, sources, targets: model(*sources, targets)[0],
        "stepwise": lambda model, sources, targets: stepwise_target_log_probs(model, *sources, targets),
    }
    rates = {}
    for name, target_log_probs in paths.items():
        seed_everything(section["seed"])
        model = Seq2SeqExtractor(**model_args_for(section, data)).to(dev).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=section["learning_rate"])

        def step(batch, model=model, optimizer=optimizer, target_log_probs=target_log_probs) -> None:
            sources, targets = batch
            nll, _ = sequence_nll(target_log_probs(model, sources, targets), targets)
            optimizer.zero_grad(set_to_none=True)
            (nll / targets.shape[0]).backward()
            optimizer.step()

        rates[name] = sum(len(indices) for indices in order[WARMUP_STEPS:]) / _timed(step, batches, dev)
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "threads": torch.get_num_threads(),
        "batch_size": section["batch_size"],
        "steps": len(order) - WARMUP_STEPS,
        "packed_sentences_per_second": round(rates["packed"], 1),
        "stepwise_sentences_per_second": round(rates["stepwise"], 1),
        "speedup": round(rates["packed"] / rates["stepwise"], 2),
    }
