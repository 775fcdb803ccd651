"""Encoding token rows and cutting them into length-bucketed, padded batches.

Why buckets: a batch is padded to its longest row, and the recurrent layer's cost
grows with that width. Sorting rows by length inside large random pools, cutting
batches from the sorted pool and shuffling the batch order keeps batches nearly
rectangular (little padding, fewer packed-sequence steps) while every epoch still
sees a different mix. Each batch is sorted longest-first, which is the order
``pack_padded_sequence`` wants.

Imports torch and numpy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.errors import InputError
from pipeline.models.vocab import Vocab


@dataclass
class EncodedSplit:
    """Token-id sequences and label ids of one split."""

    sequences: list[np.ndarray]  # each (L_i,) int64, 1 <= L_i <= max_tokens
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(s) for s in self.sequences), dtype=np.int64, count=len(self.sequences))


def encode_tokens(tokens: Sequence[str], vocab: Vocab, *, max_tokens: int) -> np.ndarray:
    """Tokens -> (L,) int64 ids, truncated to ``max_tokens``; never empty (empty -> one <unk>)."""
    ids = vocab.encode(list(tokens[:max_tokens])) or [vocab.unk_index]
    return np.asarray(ids, dtype=np.int64)


def encode_rows(
    rows: Iterable[dict], vocab: Vocab, *, token_field: str, label_field: str, labels: list[str], max_tokens: int
) -> EncodedSplit:
    """Token-file rows -> ``EncodedSplit`` (rows whose label is not in ``labels`` are an error)."""
    label_index = {label: index for index, label in enumerate(labels)}
    sequences, targets = [], []
    for row in rows:
        label = row[label_field]
        if label not in label_index:
            raise InputError(
                "E210",
                f"Sentence {row.get('sentence_id')}: label {label!r} is not one of {labels}.",
                hint="Rebuild the tokens file with `jpipe run tokenize`, or fix the label in the input.",
            )
        sequences.append(encode_tokens(row[token_field], vocab, max_tokens=max_tokens))
        targets.append(label_index[label])
    return EncodedSplit(sequences=sequences, labels=np.asarray(targets, dtype=np.int64))


def bucket_batches(
    lengths: np.ndarray, *, batch_size: int, shuffle: bool, rng: np.random.Generator | None = None, pool_batches: int = 50
) -> list[np.ndarray]:
    """Index arrays of batches with similar lengths; each batch sorted longest-first.

    shuffle=False (evaluation): rows sorted by length globally, batches in that order.
    shuffle=True (training): rows shuffled, sorted by length inside pools of
    ``pool_batches * batch_size`` rows, batches cut from each pool, batch order shuffled.
    """
    count = len(lengths)
    if count == 0:
        return []
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        return [order[start : start + batch_size] for start in range(0, count, batch_size)]
    rng = rng or np.random.default_rng()
    order = rng.permutation(count)
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, count, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def pad_batch(sequences: Sequence[np.ndarray], indices: np.ndarray, *, pad_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``indices`` of ``sequences`` -> (B, T) int64 ids padded with ``pad_index`` and (B,) lengths."""
    lengths = np.fromiter((len(sequences[i]) for i in indices), dtype=np.int64, count=len(indices))
    ids = np.full((len(indices), int(lengths.max())), pad_index, dtype=np.int64)
    for row, index in enumerate(indices):
        ids[row, : lengths[row]] = sequences[index]
    return ids, lengths


@dataclass
class Batch:
    """One padded batch: ``token_ids`` (B, T) on the device, ``lengths`` (B,) on the CPU
    (``pack_padded_sequence`` needs them there; keeping them there avoids a device sync),
    ``labels`` (B,) on the device, ``indices`` (B,) positions in the split."""

    token_ids: torch.Tensor  # noqa: F821
    lengths: torch.Tensor  # noqa: F821
    labels: torch.Tensor  # noqa: F821
    indices: np.ndarray


def iterate_batches(split: EncodedSplit, batches: list[np.ndarray], *, device, pad_index: int = 0) -> Iterator[Batch]:
    """Pad each batch on the CPU and move it to ``device`` (pinned + non_blocking on CUDA)."""
    import torch

    cuda = getattr(device, "type", str(device)) == "cuda"
    for indices in batches:
        ids, lengths = pad_batch(split.sequences, indices, pad_index=pad_index)
        token_ids = torch.from_numpy(ids)
        labels = torch.from_numpy(split.labels[indices])
        if cuda:
            token_ids, labels = token_ids.pin_memory(), labels.pin_memory()
        yield Batch(
            token_ids=token_ids.to(device, non_blocking=True),
            lengths=torch.from_numpy(lengths),
            labels=labels.to(device, non_blocking=True),
            indices=indices,
        )
