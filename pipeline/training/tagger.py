"""Training of the BiLSTM BIO tagger (baseline (b) of ``evaluate_extractor``) through the shared loop.

Gold tags: the tokens covering each evaluation's expression in the sentence are B I I ...;
the rest O. Epoch ``e`` shuffles with ``numpy.random.default_rng([seed, e])`` and seeds torch
with ``seed + e``. Early stopping on dev tag F1 (tokens inside expressions, B/I exact).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.data.opinions import covering_tokens, find_span, token_offsets
from pipeline.models.batching import bucket_batches, pad_batch
from pipeline.models.runtime import seed_everything
from pipeline.models.tagger import BiLSTMTagger, spans_from_tags
from pipeline.models.vocab import Vocab
from pipeline.training.loop import DevStats, EarlyStopping, LoopSettings, StepRunner, TrainStats, train

BATCH_SIZE = 32


def gold_tags(example) -> np.ndarray:
    """(S,) tag ids of an example (``pipeline.training.extractor.Example``): 0 = O, 1 = B, 2 = I."""
    tags = np.zeros(len(example.tokens), dtype=np.int64)
    offsets = token_offsets(example.text, example.tokens)
    for record in example.records:
        span = find_span(example.text, record["expression"])
        covered = covering_tokens(offsets, span) if span else None
        if covered:
            tags[covered[0]] = 1
            tags[covered[0] + 1 : covered[1]] = 2
    return tags


class TaggerTraining:
    def __init__(self, *, model: BiLSTMTagger, vocab: Vocab, train_examples, dev_examples, seed: int, device) -> None:
        self.model, self.vocab, self.seed, self.device = model, vocab, seed, device
        self.train_ids = [np.asarray(vocab.encode(e.tokens), dtype=np.int64) for e in train_examples]
        self.train_tags = [gold_tags(e) for e in train_examples]
        self.dev_ids = [np.asarray(vocab.encode(e.tokens), dtype=np.int64) for e in dev_examples]
        self.dev_tags = [gold_tags(e) for e in dev_examples]
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=-100)

    def _logits(self, sequences, indices):
        ids, lengths = pad_batch(sequences, indices)
        return self.model(torch.from_numpy(ids).to(self.device), torch.from_numpy(lengths)), lengths

    def _targets(self, tags, indices, width: int) -> torch.Tensor:
        padded = np.full((len(indices), width), -100, dtype=np.int64)  # -100: padding, ignored by the loss
        for row, index in enumerate(indices):
            padded[row, : len(tags[index])] = tags[index]
        return torch.from_numpy(padded).to(self.device)

    def train_epoch(self, epoch: int, steps: StepRunner) -> TrainStats:
        torch.manual_seed(self.seed + epoch)
        rng = np.random.default_rng([self.seed, epoch])
        self.model.train()
        total = 0.0
        lengths = np.fromiter((len(s) for s in self.train_ids), dtype=np.int64)
        for indices in bucket_batches(lengths, batch_size=BATCH_SIZE, shuffle=True, rng=rng):
            logits, batch_lengths = self._logits(self.train_ids, indices)  # (B, S, 3)
            loss = self.loss_fn(logits.flatten(0, 1), self._targets(self.train_tags, indices, logits.shape[1]).flatten())
            steps.step(loss)
            total += float(loss.detach()) * len(indices)
        return TrainStats(record={"train_loss": round(total / len(self.train_ids), 5)}, items=len(self.train_ids), unit="sentences")

    def predict(self, sequences) -> list[list[int]]:
        self.model.eval()
        tags: list[list[int]] = [[] for _ in sequences]
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64)
        with torch.no_grad():
            for indices in bucket_batches(lengths, batch_size=64, shuffle=False):
                logits, batch_lengths = self._logits(sequences, indices)
                best = logits.argmax(-1).cpu().numpy()
                for row, index in enumerate(indices):
                    tags[index] = best[row, : batch_lengths[row]].tolist()
        return tags

    def evaluate(self, epoch: int, steps: StepRunner) -> DevStats:
        predicted = self.predict(self.dev_ids)
        gold = np.concatenate(self.dev_tags)
        guess = np.concatenate([np.asarray(p, dtype=np.int64) for p in predicted])
        hits = int(((gold == guess) & (gold > 0)).sum())
        f1 = 2 * hits / max(1, int((gold > 0).sum()) + int((guess > 0).sum()))
        return DevStats(record={"dev_tag_f1": round(f1, 5)}, value=f1)

    def on_plateau(self, steps: StepRunner) -> None:
        """Nothing."""


def train_tagger(*, train_examples, dev_examples, seed: int, epochs: int, work_dir: Path, device) -> tuple[TaggerTraining, dict]:
    """A trained tagger (best dev epoch) and the loop's metrics."""
    seed_everything(seed)
    vocab = Vocab.build(e.tokens for e in train_examples)
    model = BiLSTMTagger(vocab_size=len(vocab)).to(device)
    task = TaggerTraining(model=model, vocab=vocab, train_examples=train_examples, dev_examples=dev_examples, seed=seed, device=device)
    steps = StepRunner(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=2e-3), device=device, grad_clip=1.0)
    settings = LoopSettings(
        name=f"tagger seed {seed}",
        epochs=epochs,
        stopping=EarlyStopping(monitor="dev_tag_f1", mode="max", patience=3),
        work_dir=Path(work_dir),
        signature=f"tagger-{seed}",
    )
    result = train(task, steps=steps, settings=settings)
    return task, result.metrics


def tagged_expressions(task: TaggerTraining, examples) -> list[list[tuple[int, int, str]]]:
    """Per example: (first token, end token, expression text) of each predicted span."""
    sequences = [np.asarray(task.vocab.encode(e.tokens), dtype=np.int64) for e in examples]
    result = []
    for example, tags in zip(examples, task.predict(sequences), strict=True):
        offsets = token_offsets(example.text, example.tokens)
        spans = []
        for start, end in spans_from_tags(tags):
            known = [o for o in offsets[start:end] if o is not None]
            if known:
                spans.append((start, end, example.text[known[0][0] : known[-1][1]]))
        result.append(spans)
    return result
