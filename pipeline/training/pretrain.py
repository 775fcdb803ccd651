"""Stage ``pretrain_lm``: forward and backward word LSTM language models for the classifiers' init = "pretrained".

ULMFiT-style (Howard & Ruder 2018), sized for a CPU: each LM is the classifier's embedding
(same token field, same size, initialised from the same vectors) and ONE LSTM layer of the
classifier's ``hidden_size``, so its weights drop into one direction of the classifier's BiLSTM
(:func:`copy_language_models`): the forward LM into the forward direction, the backward LM
(trained on the reversed stream) into the reverse one. The text comes from
``pipeline.training.pretrain_data`` (KNBC training articles + the token store; 2% of the
documents held apart).

Training goes through the one loop (``pipeline.training.loop``): a loop "epoch" is one *round*,
``max_tokens / rounds`` tokens of the stream, cut into ``batch_size`` parallel streams read in
``bptt``-token chunks with the LSTM state carried across chunks (truncated BPTT). After each
round: the held-apart perplexity (early stopping, lower is better) and a checkpoint, so a killed
run resumes after its last round; round ``r`` reseeds dropout with ``seed + r`` and reads a
fixed slice of the stream, so a resumed run computes what an uninterrupted one does.

Output ``models/pretrained_lm/``: ``forward/`` and ``backward/`` model directories
(``LSTMLanguageModel``, safetensors, shared vocabulary) and ``pretrain.json`` (perplexities on the
held-apart text and on KNBC's test articles, tokens/s, the text's statistics).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.io import read_json, sha256_file, write_json
from pipeline.metrics import perplexity
from pipeline.models.language_model import LSTMLanguageModel, load_generator
from pipeline.models.runtime import pick_device, seed_everything
from pipeline.models.vocab import Vocab, embedding_matrix, read_word2vec_text
from pipeline.training.loop import DevStats, EarlyStopping, LoopSettings, StepRunner, TrainStats, checkpoint_signature, train
from pipeline.training.pretrain_data import EVAL_BATCH, PretrainText, build_pretrain_text
from pipeline.training.stage_io import TrainedModel, pretrained_vectors_file, tokenizer_settings, write_trained_model

logger = logging.getLogger(__name__)

ARCHITECTURE = "LSTMLanguageModel"
DIRECTIONS = ("forward", "backward")
SUMMARY_NAME = "pretrain.json"
ADAPTIVE_CUTOFFS = (2000, 10000)  # head: the 2,000 most frequent words; tails: the next 8,000, then the rest
EVAL_BPTT = 200
RANDOM_EMBEDDING_DIM = 100  # as the classifier's fallback


# -------------------------------------------------------------------- streams
def batchify(stream: np.ndarray, batch_size: int) -> torch.Tensor:
    """(N,) ids -> (batch_size, N // batch_size) long: row b is the b-th contiguous part of the stream."""
    columns = len(stream) // batch_size
    return torch.from_numpy(stream[: columns * batch_size].reshape(batch_size, columns).astype(np.int64))


def round_slice(stream: np.ndarray, round_index: int, size: int) -> np.ndarray:
    """Tokens ``[round_index * size, (round_index + 1) * size)`` of the stream repeated end to end."""
    if len(stream) == 0:
        return stream
    positions = (np.arange(size, dtype=np.int64) + round_index * size) % len(stream)
    return stream[positions]


def direction_stream(stream: np.ndarray, direction: str) -> np.ndarray:
    return stream[::-1].copy() if direction == "backward" else stream


def lm_loss(model: LSTMLanguageModel, inputs: torch.Tensor, targets: torch.Tensor, state) -> tuple[torch.Tensor, Any]:
    """Mean -log p(targets) over ``targets`` [batch, time] and the LSTM state after ``inputs`` [batch, time]."""
    if model.adaptive is not None:
        return model.adaptive_loss(inputs, targets, state=state)
    logits, state = model(inputs, state=state)  # (B, T, V)
    return nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1)), state


@torch.no_grad()
def stream_perplexity(model: LSTMLanguageModel, stream: np.ndarray, *, device: torch.device) -> float | None:
    """exp(mean -log p) of every token after the first of each of ``EVAL_BATCH`` parallel parts of ``stream``."""
    if len(stream) < 2 * EVAL_BATCH:
        return None
    model.eval()
    data = batchify(stream, EVAL_BATCH).to(device)
    nll, count, state = 0.0, 0, None
    for start in range(0, data.size(1) - 1, EVAL_BPTT):
        inputs, targets = data[:, start : start + EVAL_BPTT], data[:, start + 1 : start + 1 + EVAL_BPTT]
        loss, state = lm_loss(model, inputs[:, : targets.size(1)], targets, state)
        nll += float(loss) * targets.numel()
        count += targets.numel()
    return perplexity(nll, count)


# -------------------------------------------------------------------- training
class LMPretraining:
    """One direction's part of the training loop: a round of truncated BPTT, held-apart perplexity."""

    def __init__(
        self,
        *,
        model: LSTMLanguageModel,
        text: PretrainText,
        direction: str,
        section: dict,
        device: torch.device,
        stage: str = "pretrain_lm",
    ) -> None:
        self.model, self.device, self.section = model, device, section
        self.name = f"{stage} {direction}"
        self.train_stream = direction_stream(text.train, direction)
        self.dev_stream = direction_stream(text.dev, direction)
        self.round_tokens = max(section["batch_size"] * 2, section["max_tokens"] // section["rounds"])

    def train_epoch(self, epoch: int, steps: StepRunner) -> TrainStats:
        torch.manual_seed(self.section["seed"] + epoch)  # dropout masks of this round
        self.model.train()
        data = batchify(round_slice(self.train_stream, epoch - 1, self.round_tokens), self.section["batch_size"]).to(self.device)
        bptt = self.section["bptt"]
        starts = range(0, data.size(1) - 1, bptt)
        loss_sum = torch.zeros((), device=self.device)
        tokens, state = 0, None
        for start in steps.progress(starts, total=len(starts), desc=f"{self.name} round {epoch}"):
            inputs, targets = data[:, start : start + bptt], data[:, start + 1 : start + 1 + bptt]
            inputs = inputs[:, : targets.size(1)]
            if state is not None:
                state = tuple(part.detach() for part in state)  # truncated BPTT: keep the state, cut the graph
            with steps.autocast():
                loss, state = lm_loss(self.model, inputs, targets, state)
            steps.step(loss)
            loss_sum += loss.detach() * targets.numel()
            tokens += targets.numel()
        train_loss = float(loss_sum.item()) / max(1, tokens)
        record = {"train_loss": round(train_loss, 5), "train_perplexity": round(math.exp(min(train_loss, 50.0)), 3)}
        return TrainStats(record=record, items=tokens, unit="tokens")

    def evaluate(self, epoch: int, steps: StepRunner) -> DevStats:
        value = stream_perplexity(self.model, self.dev_stream, device=self.device)
        return DevStats(record={"dev_perplexity": round(value, 3) if value is not None else None}, value=value)

    def on_plateau(self, steps: StepRunner) -> None:
        """Nothing: the budget is fixed; early stopping ends a run that stopped improving."""


def fitting_cutoffs(vocab_size: int, hidden_size: int) -> list[int]:
    """The ``ADAPTIVE_CUTOFFS`` a vocabulary of ``vocab_size`` rows and an LSTM of ``hidden_size`` units can use.

    A cutoff must lie inside the vocabulary, and tail cluster i projects to hidden_size / 4**(i + 1)
    units: no cluster narrower than 4 units. Empty: the vocabulary is too small for an adaptive softmax.
    """
    return [cut for i, cut in enumerate(ADAPTIVE_CUTOFFS) if cut < vocab_size - 1 and hidden_size // 4 ** (i + 1) >= 4]


def model_args_for(*, vocab: Vocab, embedding_dim: int, hidden_size: int, section: dict) -> dict[str, Any]:
    cutoffs = fitting_cutoffs(len(vocab), hidden_size) if section["adaptive_softmax"] else []
    return {
        "vocab_size": len(vocab),
        "embedding_size": embedding_dim,
        "hidden_size": hidden_size,
        "num_layers": 1,
        "dropout": section["dropout"],
        "tie_weights": False,
        "num_theme_slots": 0,
        "pad_index": vocab.pad_index,
        "adaptive_cutoffs": cutoffs or None,
    }


def pretrain_direction(
    *,
    direction: str,
    text: PretrainText,
    embedding: tuple[np.ndarray | None, np.ndarray | None],  # (initial table, rows that have a vector)
    model_args: dict,
    section: dict,
    work_dir: Path,
    resume: bool,
    signature: str,
    stage: str = "pretrain_lm",
    model: LSTMLanguageModel | None = None,
) -> TrainedModel:
    """Train one direction through the loop; the model ends with its best held-apart weights (``stage`` names the logs).

    ``model``: a trained LM to go on training (target-LM fine-tuning) instead of a new one of ``model_args``.
    """
    device = pick_device(section["device"])
    seed_everything(section["seed"] + (0 if direction == "forward" else 1000))
    matrix, has_vector = embedding
    if model is None:
        model = LSTMLanguageModel(**model_args)
        if matrix is not None:
            model.init_embeddings(matrix)
    model.to(device)
    if has_vector is not None and section["freeze_vectors"]:
        freeze_rows(model, has_vector)
    task = LMPretraining(model=model, text=text, direction=direction, section=section, device=device, stage=stage)
    optimizer = torch.optim.Adam(model.parameters(), lr=section["learning_rate"])
    steps = StepRunner(model=model, optimizer=optimizer, device=device, amp=False, grad_clip=section["grad_clip"])
    settings = LoopSettings(
        name=task.name,
        epochs=section["rounds"],
        stopping=EarlyStopping(monitor="dev_perplexity", mode="min", patience=section["patience"]),
        work_dir=work_dir / direction,
        signature=checkpoint_signature({**section, "direction": direction}, signature=signature),
        resume=resume,
    )
    started = time.perf_counter()
    result = train(task, steps=steps, settings=settings)
    test_ppl = stream_perplexity(model, direction_stream(text.knbc_test, direction), device=device)
    rates = [r["train_tokens_per_second"] for r in result.records]
    metrics = {
        "direction": direction,
        **result.metrics,
        "knbc_test_perplexity": round(test_ppl, 3) if test_ppl is not None else None,
        "train_tokens_per_second": round(float(np.median(rates)), 1) if rates else None,
        "seconds": round(time.perf_counter() - started, 1),
        "vocab_size": len(text.vocab),
    }
    logger.info("%s: held-apart perplexity %s, KNBC test %s", task.name, metrics.get("dev_perplexity"), metrics["knbc_test_perplexity"])
    return TrainedModel(
        model=model, architecture=ARCHITECTURE, model_args=model_args, vocab=text.vocab, metrics=metrics, records=result.records
    )


# -------------------------------------------------------------------- stage
def pretrain_embedding(ctx, vocab: Vocab, classifier: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The LM's initial embedding: the classifier's vectors (by word; random rows elsewhere), and the
    rows that have a vector (bool, V); (None, None) for random."""
    vectors_file = pretrained_vectors_file(ctx, section_name="classifier", source=classifier["embedding_init"])
    if vectors_file is None:
        return None, None
    words, vectors = read_word2vec_text(vectors_file)
    matrix, coverage = embedding_matrix(vocab, words, vectors, seed=ctx.section["seed"])
    known = set(words)
    has_vector = np.asarray([word in known for word in vocab.itos], dtype=bool)
    logger.info("pretrain_lm: %.1f%% of the vocabulary has a %s vector", 100 * coverage, classifier["embedding_init"])
    return matrix, has_vector


def freeze_rows(model: LSTMLanguageModel, rows: np.ndarray) -> None:
    """Zero the embedding gradient of ``rows`` (bool, V): with Adam and no weight decay they never move.

    Why: the classifier keeps its pretrained vectors frozen, so the LSTM it receives should have
    learned on exactly those inputs; the rows without a vector (corpus-only words) still learn.
    """
    keep = torch.as_tensor(~rows, dtype=model.embedding.weight.dtype, device=model.embedding.weight.device).unsqueeze(1)  # (V, 1)
    model.embedding.weight.register_hook(lambda grad: grad * keep)


def pretrain_lm_stage(ctx) -> dict[str, Any]:
    """Stage ``pretrain_lm``: both directions, their model directories and ``pretrain.json``."""
    from pipeline.paths import EXTRA_TOKENS, PRETRAINED_LM_DIR, TOKENS

    section, classifier = ctx.section, ctx.config["classifier"]
    token_field = classifier["token_field"]
    tokens_path = ctx.input(TOKENS)
    text = build_pretrain_text(tokens_path=tokens_path, store_path=ctx.input(EXTRA_TOKENS), section=section, token_field=token_field)
    logger.info("pretrain_lm: %s", ", ".join(f"{key} {value}" for key, value in text.stats.items()))
    embedding = pretrain_embedding(ctx, text.vocab, classifier)
    embedding_dim = embedding[0].shape[1] if embedding[0] is not None else classifier["embedding_dim"]
    model_args = model_args_for(vocab=text.vocab, embedding_dim=embedding_dim, hidden_size=classifier["hidden_size"], section=section)
    # what a checkpoint must match to be resumed: the text, the initial vectors and the model's shape
    vectors_hash = hashlib.sha256(embedding[0].tobytes()).hexdigest() if embedding[0] is not None else None
    signature = f"{sha256_file(tokens_path)} {text.stats} {model_args} {vectors_hash}"
    out = ctx.output(PRETRAINED_LM_DIR)
    tokenizer = tokenizer_settings(project_dir=ctx.project_dir, token_field=token_field)
    summary: dict[str, Any] = {"text": text.stats, "token_field": token_field}
    for direction in DIRECTIONS:
        trained = pretrain_direction(
            direction=direction,
            text=text,
            embedding=embedding,
            model_args=model_args,
            section=section,
            work_dir=Path(ctx.work_dir),
            resume=ctx.resume,
            signature=signature,
        )
        trained.extra = {"token_field": token_field, "direction": direction, "level": "word", "unit": "stream"}
        write_trained_model(out / direction, trained, tokenizer=tokenizer, config={**dict(section), "classifier": dict(classifier)})
        summary[direction] = trained.metrics
    write_json(out / SUMMARY_NAME, summary)
    return {
        "dev_perplexity_forward": summary["forward"].get("dev_perplexity"),
        "dev_perplexity_backward": summary["backward"].get("dev_perplexity"),
        "knbc_test_perplexity_forward": summary["forward"]["knbc_test_perplexity"],
        "train_tokens": text.stats["train_tokens"],
        "tokens_per_second": summary["forward"]["train_tokens_per_second"],
        "vocab_size": len(text.vocab),
    }


# -------------------------------------------------------------------- classifier init
LSTM_WEIGHTS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def copy_language_models(
    classifier: nn.Module, vocab: Vocab, *, forward: LSTMLanguageModel, backward: LSTMLanguageModel, lm_vocab: Vocab
) -> dict[str, Any]:
    """Initialise ``classifier`` (an ``AttentionClassifier``) from the two LMs, in place.

    Embedding rows are copied by word (``<unk>`` included, ``<pad>`` stays zero; words the LMs do
    not know keep their row); the forward LM's LSTM goes into the first layer's forward direction,
    the backward LM's into its reverse direction (``*_l0_reverse``). Returns what was copied.
    """
    rnn = classifier.rnn
    lm = forward.lstm
    if not isinstance(rnn, nn.LSTM) or rnn.hidden_size != lm.hidden_size or rnn.input_size != lm.input_size:
        raise ModelError(
            "E317",
            f"The pretrained LMs have embedding {lm.input_size} and hidden size {lm.hidden_size}; the classifier has "
            f"{rnn.input_size} and {rnn.hidden_size} ({type(rnn).__name__}).",
            hint="Give the task the [classifier] sizes and cell = lstm, or rerun pretrain_lm after changing [classifier].",
        )
    rows = [(row, lm_vocab.stoi[word]) for word, row in vocab.stoi.items() if word in lm_vocab.stoi and row != vocab.pad_index]
    with torch.no_grad():
        if rows:
            target, source = (torch.tensor(part) for part in zip(*rows, strict=True))
            classifier.embedding.weight[target] = forward.embedding.weight[source].to(classifier.embedding.weight.dtype)
        for name in LSTM_WEIGHTS:
            getattr(rnn, name).copy_(getattr(forward.lstm, name))
            getattr(rnn, f"{name}_reverse").copy_(getattr(backward.lstm, name))
    return {"embedding_rows_copied": len(rows), "embedding_rows_share": round(len(rows) / max(1, len(vocab)), 4)}


def init_classifier_from_dir(classifier: nn.Module, vocab: Vocab, *, lm_dir: Path, token_field: str) -> dict[str, Any]:
    """:func:`copy_language_models` from a ``pretrain_lm`` output directory (checks the token field)."""
    forward = load_generator(lm_dir / "forward")
    backward = load_generator(lm_dir / "backward")
    lm_field = read_json(lm_dir / "forward" / "vocab.json").get("token_field")
    if lm_field != token_field:
        raise ModelError(
            "E317",
            f"The pretrained LMs read the {lm_field!r} token field; this classifier reads {token_field!r}.",
            hint="Use the [classifier] token_field for the task, or rerun pretrain_lm.",
        )
    info = copy_language_models(classifier, vocab, forward=forward.model, backward=backward.model, lm_vocab=forward.vocab)
    return {**info, "pretrained_lm": read_json(lm_dir / SUMMARY_NAME).get("forward", {}).get("dev_perplexity")}
