"""Stage ``train_extractor``: the seq2seq opinion (評判) extractor of ``pipeline.models.seq2seq``.

Imports torch, numpy and torch/numpy-only project modules (no spaCy, SudachiPy, gensim).
Data: the GiNZA surface tokens of ``data/tokens/knbc.jsonl`` (the input) and the 評判
evaluations of ``data/prepared/sentences.jsonl`` (the tokens file does not carry them),
joined on ``sentence_id``; the article-grouped ``split`` of the prepare stage. Each
sentence's evaluations are linearized by ``pipeline.data.opinions``.

What is specific to the extractor (``ExtractorTraining``), the loop being ``pipeline.training.loop``:

* epoch ``e`` shuffles with ``numpy.random.default_rng([seed, e])`` and seeds torch with
  ``seed + e`` (dropout, scheduled sampling), so a resumed run repeats an uninterrupted one;
* teacher forcing; with ``scheduled_sampling`` the share of decoder inputs taken from the
  model's own predictions rises from 0 after ``sampling_warmup`` epochs to ``sampling_max``;
* after each epoch: dev loss (per output token), greedy-decoded dev record F1 and expression F1;
  early stopping on their sum, ``dev_score`` (the record F1 alone stays near 0 for many epochs);
* with ``seeds`` > 1 one model per seed (``pipeline.training.seeds``): the median-``dev_score`` seed
  is ``models/extractor``, every seed is in ``models/extractor/seeds/<seed>/``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.opinions import REC, SEP, TYPES, gold_records, linearize, parse
from pipeline.errors import InputError
from pipeline.io import read_jsonl, sha256_file
from pipeline.metrics import opinion_scores
from pipeline.models.batching import bucket_batches
from pipeline.models.runtime import pick_device, seed_everything
from pipeline.models.seq2seq import (
    ARCHITECTURE,
    TARGET_SPECIALS,
    Seq2SeqExtractor,
    SourceItem,
    decode_ids,
    encode_source,
    encode_target,
    pad_sources,
    pad_targets,
    sequence_nll,
)
from pipeline.models.vocab import Vocab
from pipeline.text.tokenize import read_token_rows
from pipeline.training.loop import DevStats, EarlyStopping, LoopSettings, StepRunner, TrainStats, checkpoint_signature, train
from pipeline.training.seeds import publish_seeds, train_seeds
from pipeline.training.stage_io import TrainedModel

logger = logging.getLogger(__name__)

TOKEN_FIELD = "surface"
EVAL_BATCH_SIZE = 64
MONITOR = "dev_score"  # dev record F1 + expression F1: early stopping, and the median seed kept
TRAINER_VERSION = 2  # 2: packed teacher forcing (another dropout stream): older checkpoints do not resume


# --------------------------------------------------------------------- data
@dataclass
class Example:
    sentence_id: str
    text: str
    tokens: list[str]  # source surface tokens
    records: list[dict]  # gold records (type, expression, target, polarity)
    output: list[str]  # linearized records (decoder target, without </s>)


@dataclass
class ExtractorData:
    source_vocab: Vocab
    target_vocab: Vocab
    splits: dict[str, list[Example]]


def read_examples(tokens_path: Path, sentences_path: Path, *, splits: tuple[str, ...] = ("train", "dev")) -> dict[str, list[Example]]:
    """Examples of ``splits``: tokens from the tokens file, evaluations from the prepared sentences (by sentence_id)."""
    evaluations = {row["sentence_id"]: row.get("evaluations") or [] for row in read_jsonl(sentences_path)}
    rows = {name: [] for name in splits}
    for row in read_token_rows(tokens_path):
        if row.get("split") in rows and row.get(TOKEN_FIELD):
            records = gold_records(evaluations.get(row["sentence_id"], []))
            rows[row["split"]].append((row, records))
    if "train" in rows and not rows["train"]:
        raise InputError("E209", f"{tokens_path} has no training sentences.", hint="Rebuild the tokens with `jpipe run prepare tokenize`.")
    known = {token for row, _ in rows.get("train", []) for token in row[TOKEN_FIELD]}
    return {
        name: [
            Example(
                sentence_id=row["sentence_id"],
                text=row["text"],
                tokens=list(row[TOKEN_FIELD]),
                records=records,
                output=linearize(records, text=row["text"], tokens=row[TOKEN_FIELD], known=known),
            )
            for row, records in split_rows
        ]
        for name, split_rows in rows.items()
    }


def build_vocabularies(train_examples: list[Example], section: dict) -> tuple[Vocab, Vocab]:
    """Source: training words (``min_count``); target: specials, separators, the 12 types, then output words (``target_min_count``)."""
    source = Vocab.build((e.tokens for e in train_examples), min_count=section["min_count"])
    counts = Counter(token for e in train_examples for token in e.output)
    fixed = [*TARGET_SPECIALS, SEP, REC, *TYPES]
    words = sorted((t for t, n in counts.items() if n >= section["target_min_count"] and t not in fixed), key=lambda t: (-counts[t], t))
    return source, Vocab(fixed + words)


def prepare_extractor_data(*, tokens_path: Path, sentences_path: Path, section: dict) -> ExtractorData:
    splits = read_examples(tokens_path, sentences_path)
    source, target = build_vocabularies(splits["train"], section)
    return ExtractorData(source_vocab=source, target_vocab=target, splits=splits)


@dataclass
class EncodedExamples:
    items: list[SourceItem]
    targets: list[np.ndarray]  # (T_i,) ids ending in </s>

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(item.source_ids) for item in self.items), dtype=np.int64, count=len(self.items))

    def bucket_keys(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Sort keys for length buckets: output length first (the decoder's Python loop runs to the longest
        output of the batch: 2.8x fewer steps than bucketing by input length), then input length.

        With ``rng`` (training), each "no opinion" sentence (output = ``</s>`` alone) takes the output length
        of a random sentence with opinions, so every batch mixes both. Batches made only of "no opinion"
        outputs would each push the first step to ``</s>`` with a full optimizer step, and the model
        learnt to always say "no opinion" (P(</s>) 0.9 at the first step on KNBC, for 51 % true)."""
        output_lengths = np.fromiter((len(t) for t in self.targets), dtype=np.int64, count=len(self.targets))
        empty = output_lengths == 1
        if rng is not None and empty.any() and not empty.all():
            output_lengths = output_lengths.copy()
            output_lengths[empty] = rng.choice(output_lengths[~empty], size=int(empty.sum()))
        return output_lengths * 10_000 + self.lengths


def encode_examples(examples: list[Example], data: ExtractorData, section: dict) -> EncodedExamples:
    items = [
        encode_source(e.tokens, source_vocab=data.source_vocab, target_vocab=data.target_vocab, max_tokens=section["max_tokens"])
        for e in examples
    ]
    targets = [
        encode_target(e.output[: section["max_output_tokens"] - 1], item, target_vocab=data.target_vocab, copy=section["copy"])
        for e, item in zip(examples, items, strict=True)
    ]
    return EncodedExamples(items=items, targets=targets)


# -------------------------------------------------------------------- model
def model_args_for(section: dict, data: ExtractorData) -> dict[str, Any]:
    target = data.target_vocab
    return {
        "source_vocab_size": len(data.source_vocab),
        "target_vocab_size": len(target),
        **{key: section[key] for key in ("embedding_dim", "hidden_size", "attention_size", "dropout", "copy")},
        "pad_index": target.pad_index,
        "unk_index": target.unk_index,
        "bos_index": target.stoi["<s>"],
        "eos_index": target.stoi["</s>"],
    }


def sampling_probability(section: dict, epoch: int) -> float:
    """Scheduled sampling share of epoch ``epoch`` (1-based): 0 during the warm-up, then a linear ramp to ``sampling_max``."""
    if not section["scheduled_sampling"]:
        return 0.0
    ramp = (epoch - section["sampling_warmup"]) / section["sampling_ramp"]
    return float(section["sampling_max"] * min(1.0, max(0.0, ramp)))


def decode_examples(
    model: Seq2SeqExtractor,
    examples: list[Example],
    encoded: EncodedExamples,
    *,
    target_vocab: Vocab,
    max_length: int,
    device,
    beam: int = 1,
) -> list[list[dict]]:
    """Decoded records per example (greedy in batches for ``beam`` 1, else beam search one by one)."""
    model.eval()
    outputs: list[list[str]] = [[] for _ in examples]
    order = bucket_batches(encoded.lengths, batch_size=EVAL_BATCH_SIZE, shuffle=False)
    for indices in order:
        items = [encoded.items[i] for i in indices]
        tensors = pad_sources(items, target_vocab_size=len(target_vocab), device=device)
        if beam == 1:
            hypotheses = model.greedy(*tensors, max_length=max_length)
        else:
            hypotheses = [
                model.beam_search(
                    *pad_sources([item], target_vocab_size=len(target_vocab), device=device), beam=beam, max_length=max_length
                )
                for item in items
            ]
        for index, item, hypothesis in zip(indices, items, hypotheses, strict=True):
            outputs[index] = decode_ids(hypothesis.ids, item, target_vocab=target_vocab)
    return [parse(output, text=e.text) for e, output in zip(examples, outputs, strict=True)]


# ----------------------------------------------------------------- training
class ExtractorTraining:
    """The extractor's part of the training loop: teacher forcing (+ scheduled sampling), dev record F1."""

    def __init__(self, *, model: Seq2SeqExtractor, data: ExtractorData, section: dict, device: torch.device) -> None:
        self.model, self.data, self.section, self.device = model, data, section, device
        self.train_set = encode_examples(data.splits["train"], data, section)
        self.dev_examples = data.splits["dev"]
        self.dev_set = encode_examples(self.dev_examples, data, section)

    def _loss(self, encoded: EncodedExamples, indices, *, sampling: float) -> tuple[torch.Tensor, torch.Tensor]:
        items = [encoded.items[i] for i in indices]
        sources = pad_sources(items, target_vocab_size=self.model.target_vocab_size, device=self.device)
        targets = pad_targets([encoded.targets[i] for i in indices], device=self.device)
        target_log_probs, _ = self.model(*sources, targets, sampling_probability=sampling)  # (B, T)
        return sequence_nll(target_log_probs, targets)

    def train_epoch(self, epoch: int, steps: StepRunner) -> TrainStats:
        seed = self.section["seed"]
        torch.manual_seed(seed + epoch)  # dropout and scheduled-sampling draws of this epoch
        rng = np.random.default_rng([seed, epoch])
        sampling = sampling_probability(self.section, epoch)
        self.model.train()
        total = torch.zeros((), device=self.device)
        tokens = 0
        batches = bucket_batches(self.train_set.bucket_keys(rng), batch_size=self.section["batch_size"], shuffle=True, rng=rng)
        for indices in steps.progress(batches, total=len(batches), desc=f"extractor epoch {epoch}"):
            with steps.autocast():
                nll, count = self._loss(self.train_set, indices, sampling=sampling)
            # Summed over each output, averaged over sentences: every sentence's first decision (opinion or
            # not) weighs the same, whatever the output lengths of its batch.
            steps.step(nll / len(indices))
            total += nll.detach()
            tokens += int(count)
        return TrainStats(
            record={"train_loss": round(float(total) / max(tokens, 1), 5), "sampling_probability": round(sampling, 4)},
            items=len(self.train_set.items),
            unit="sentences",
        )

    def evaluate(self, epoch: int, steps: StepRunner) -> DevStats:
        self.model.eval()
        total, tokens = 0.0, 0
        with torch.no_grad():
            for indices in bucket_batches(self.dev_set.bucket_keys(), batch_size=EVAL_BATCH_SIZE, shuffle=False):
                nll, count = self._loss(self.dev_set, indices, sampling=0.0)
                total, tokens = total + float(nll), tokens + int(count)
        predicted = decode_examples(
            self.model,
            self.dev_examples,
            self.dev_set,
            target_vocab=self.data.target_vocab,
            max_length=self.section["max_output_tokens"],
            device=self.device,
        )
        scores = opinion_scores(gold=[e.records for e in self.dev_examples], predicted=predicted)
        loss = total / max(tokens, 1)
        # Early stopping (and the choice among seeds) on record F1 + expression F1: the record F1 alone (type,
        # expression and target all exact) stays under 0.01 for many epochs on KNBC and moves by single records.
        value = scores["record_f1"] + scores["expression_f1"]
        record = {
            "dev_loss": round(loss, 5) if math.isfinite(loss) else None,
            "dev_record_f1": round(scores["record_f1"], 5),
            "dev_expression_f1": round(scores["expression_f1"], 5),
            MONITOR: round(value, 5),
        }
        return DevStats(record=record, value=value)

    def on_plateau(self, steps: StepRunner) -> None:
        """Nothing: the learning rate stays."""


def train_extractor(
    *, section: dict, data: ExtractorData, work_dir: Path, resume: bool, signature: str, name: str = "extractor"
) -> TrainedModel:
    """Train on the train split, early stopping on dev record F1 + expression F1; the model ends with its best weights."""
    device = pick_device(section["device"])
    seed_everything(section["seed"])  # before the model: its initial weights come from the seed
    model_args = model_args_for(section, data)
    model = Seq2SeqExtractor(**model_args).to(device)
    training = ExtractorTraining(model=model, data=data, section=section, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=section["learning_rate"], weight_decay=section["weight_decay"])
    steps = StepRunner(model=model, optimizer=optimizer, device=device, amp=section["amp"], grad_clip=section["grad_clip"])
    logger.info(
        "%s: %d train / %d dev sentences, vocabularies %d source / %d target, copy %s, scheduled sampling %s, on %s",
        name,
        len(data.splits["train"]),
        len(data.splits["dev"]),
        len(data.source_vocab),
        len(data.target_vocab),
        section["copy"],
        section["scheduled_sampling"],
        device,
    )
    stopping = EarlyStopping(monitor=MONITOR, mode="max", patience=section["patience"])
    settings = LoopSettings(
        name=name, epochs=section["epochs"], stopping=stopping, work_dir=Path(work_dir), signature=signature, resume=resume
    )
    result = train(training, steps=steps, settings=settings)
    metrics = {
        **result.metrics,
        "train_sentences": len(data.splits["train"]),
        "dev_sentences": len(data.splits["dev"]),
        "vocab_size": len(data.source_vocab),
        "target_vocab_size": len(data.target_vocab),
    }
    return TrainedModel(
        model=model,
        architecture=ARCHITECTURE,
        model_args=model_args,
        vocab=data.source_vocab,
        metrics=metrics,
        records=result.records,
        extra={
            "token_field": TOKEN_FIELD,
            "max_tokens": section["max_tokens"],
            "max_output_tokens": section["max_output_tokens"],
            "target_itos": data.target_vocab.itos,
        },
    )


def extractor_signature(section: dict, *, tokens_path: Path, sentences_path: Path) -> str:
    return checkpoint_signature(
        section, task="extractor", tokens=sha256_file(tokens_path), sentences=sha256_file(sentences_path), trainer=TRAINER_VERSION
    )


def train_extractor_stage(ctx) -> dict[str, Any]:
    """Stage ``train_extractor``: one model per seed (``seeds``); the median-dev one is ``models/extractor/``
    (config.json, vocab.json with the target vocabulary, weights), every seed in its ``seeds/<seed>/``."""
    from pipeline.paths import EXTRACTOR_DIR, SENTENCES, TOKENS

    section = ctx.section
    tokens_path, sentences_path = ctx.input(TOKENS), ctx.input(SENTENCES)
    data = prepare_extractor_data(tokens_path=tokens_path, sentences_path=sentences_path, section=section)
    trained = train_seeds(
        section,
        work_dir=Path(ctx.work_dir),
        name="extractor",
        train_one=lambda *, section, work_dir, name: train_extractor(
            section=section,
            data=data,
            work_dir=work_dir,
            resume=ctx.resume,
            signature=extractor_signature(section, tokens_path=tokens_path, sentences_path=sentences_path),
            name=name,
        ),
    )
    return publish_seeds(ctx, EXTRACTOR_DIR, trained, token_field=TOKEN_FIELD, monitor=MONITOR, config=dict(section))
