"""train_generator.vocab_size > 0: a vocabulary from KNBC + the corpus, and the generator's adaptive softmax (tiny fixtures)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelError
from pipeline.inference.generator import Generator
from pipeline.models.language_model import SPECIALS, LSTMLanguageModel, load_generator, sequence_nll
from pipeline.models.model_dir import load_state_dict
from pipeline.paths import EXTRA_TOKENS, GENERATOR_DIR, GENERATOR_REPORT, GENERATOR_TABLE, PRETRAINED_GENERATOR_DIR, TOKENS
from pipeline.text.tokenize import read_token_rows
from pipeline.training.language_model import (
    Encoded,
    corpus_nll,
    generator_cutoffs,
    generator_model_args,
    make_batches,
    train_pass,
)
from pipeline.training.loop import StepRunner
from pipeline.training.pretrain import fitting_cutoffs, lm_loss
from pipeline.training.pretrain_generator import generator_vocab, pretraining_text
from pipeline.workflow.stages import build_stages
from tests.conftest import run_stage, write_tiny_project, write_token_store
from tests.unit.test_pretrain import fixture_documents
from tests.unit.test_pretrain_generator import TINY_GENERATOR

VOCAB_SIZE = 40  # of the tiny fixtures' ~75 distinct words: some KNBC words and some corpus words stay out
CORPUS_VOCAB = [*TINY_GENERATOR, f"train_generator.vocab_size={VOCAB_SIZE}"]


def _project(directory: Path) -> Path:
    project = write_tiny_project(directory, vectors=False)
    shutil.rmtree(project / EXTRA_TOKENS)
    write_token_store(project / EXTRA_TOKENS, fixture_documents())
    return project


@pytest.fixture(scope="module")
def vocab_project(tmp_path_factory) -> Path:
    """pretrain_generator, then train_generator at learning rate 0 (the fine-tuned model is the pretrained one)."""
    project = _project(tmp_path_factory.mktemp("genvocab") / "proj")
    run_stage(project, "pretrain_generator", CORPUS_VOCAB)
    run_stage(project, "train_generator", [*CORPUS_VOCAB, "train_generator.learning_rate=0.0"])
    return project


def _counts(project: Path) -> Counter:
    """Surface words of KNBC's training sentences and of every corpus sentence, counted together."""
    counts = Counter(word for row in read_token_rows(project / TOKENS, split="train") for word in row["surface"])
    counts.update(word for document in fixture_documents() for sentence in document for word in sentence)
    return counts


# ------------------------------------------------------------------ vocabulary
def test_the_corpus_vocabulary_holds_the_most_frequent_words_of_knbc_and_the_corpus(tmp_path):
    project = _project(tmp_path / "proj")
    config = load_config(project, CORPUS_VOCAB)
    vocab = generator_vocab(project / TOKENS, config["train_generator"], store_path=project / EXTRA_TOKENS)
    counts = _counts(project)
    words = vocab.itos[len(SPECIALS) :]
    assert tuple(vocab.itos[: len(SPECIALS)]) == SPECIALS and len(words) == VOCAB_SIZE
    frequencies = [counts[word] for word in words]
    assert frequencies == sorted(frequencies, reverse=True)  # most frequent first
    assert min(frequencies) >= max(count for word, count in counts.items() if word not in words)  # the N most frequent
    knbc_words = {word for row in read_token_rows(project / TOKENS, split="train") for word in row["surface"]}
    assert any(word not in knbc_words for word in words)  # a corpus-only word (語N) has a row
    # the default vocabulary has KNBC's words only
    default = generator_vocab(project / TOKENS, load_config(project, TINY_GENERATOR)["train_generator"])
    assert set(default.itos) <= knbc_words | set(SPECIALS)


def test_a_vocab_size_above_the_distinct_words_takes_them_all_and_says_so(tmp_path, caplog):
    project = _project(tmp_path / "proj")
    config = load_config(project, [*TINY_GENERATOR, "train_generator.vocab_size=100000"])
    with caplog.at_level(logging.WARNING):
        vocab = generator_vocab(project / TOKENS, config["train_generator"], store_path=project / EXTRA_TOKENS)
    assert len(vocab) - len(SPECIALS) == len(_counts(project)) and "distinct words" in caplog.text


# ------------------------------------------------------------------ config
def test_a_corpus_vocabulary_needs_a_pretrained_generator(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, ["train_generator.vocab_size=30000"])
    assert error.value.code == "E108" and "vocab_size" in str(error.value) and "init" in error.value.hint
    # with init = pretrained tie_weights is ignored, so unequal sizes are no error
    load_config(tmp_path, ["train_generator.vocab_size=30000", "train_generator.init=pretrained", "train_generator.hidden_size=128"])


def test_the_default_vocab_size_keeps_the_fingerprints(tmp_path):
    for overrides in ([], ["train_generator.init=pretrained", "train_generator.seeds=3"]):
        config = load_config(tmp_path, overrides)
        stages = {stage.name: stage for stage in build_stages(config)}
        assert "vocab_size" not in config.fingerprint_view("train_generator")
        if "pretrain_generator" in stages:
            assert not any("vocab_size" in key for key in stages["pretrain_generator"].config_view(config))
    config = load_config(tmp_path, ["train_generator.init=pretrained", "train_generator.vocab_size=30000"])
    stages = {stage.name: stage for stage in build_stages(config)}
    assert config.fingerprint_view("train_generator")["vocab_size"] == 30000
    assert stages["pretrain_generator"].config_view(config)["@train_generator.vocab_size"] == 30000
    # at the default the model is built as before: full softmax, tie_weights as set
    args = generator_model_args(load_config(tmp_path)["train_generator"], _vocab(20))
    assert "adaptive_cutoffs" not in args and args["tie_weights"]


def test_the_cutoffs_are_pretrain_lms_or_half_a_small_vocabulary(tmp_path):
    assert generator_cutoffs(30004, 256) == fitting_cutoffs(30004, 256) == [2000, 10000]
    assert generator_cutoffs(5004, 256) == [2000]
    assert generator_cutoffs(44, 16) == [22]
    section = load_config(tmp_path, ["train_generator.init=pretrained", "train_generator.vocab_size=40"])["train_generator"]
    args = generator_model_args(section, _vocab(44))
    assert args["adaptive_cutoffs"] == [22] and args["tie_weights"] is False
    assert LSTMLanguageModel(**args).adaptive is not None


def _vocab(size: int):
    from pipeline.models.vocab import Vocab

    return Vocab([*SPECIALS, *(f"w{i}" for i in range(size - len(SPECIALS)))])


# ------------------------------------------------------------------ the adaptive model
def _adaptive_model(seed: int = 0, vocab_size: int = 30) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    return LSTMLanguageModel(vocab_size=vocab_size, embedding_size=8, hidden_size=16, num_theme_slots=5, pad_index=0, adaptive_cutoffs=[10])


def _sequences(count: int = 12, vocab_size: int = 30) -> list[Encoded]:
    generator = torch.Generator().manual_seed(3)
    sequences = []
    for index in range(count):
        length = int(torch.randint(3, 15, (1,), generator=generator))
        body = torch.randint(4, vocab_size, (length,), generator=generator).tolist()
        sequences.append(Encoded([2, *body, 3], theme=1 + index % 4))
    return sequences


def _forward_nll(model: LSTMLanguageModel, encoded: list[Encoded], *, use_theme: bool) -> tuple[float, int]:
    """-log p of every target from ``forward``'s log-probabilities, one sequence at a time (no padding)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for item in encoded:
            ids = torch.tensor([item.ids])
            themes = torch.tensor([item.theme if use_theme else 0])
            log_probs, _ = model(ids[:, :-1], themes=themes)
            total -= float(log_probs[0].gather(1, ids[0, 1:].unsqueeze(1)).double().sum())
            count += ids.size(1) - 1
    return total, count


def test_the_adaptive_models_perplexity_is_exp_of_the_mean_nll_of_forwards_log_probs():
    model = _adaptive_model()
    assert model.theme_output_bias is None and model.output_weight is None
    encoded = _sequences()
    for use_theme in (False, True):
        expected_nll, expected_count = _forward_nll(model, encoded, use_theme=use_theme)
        nll, count = corpus_nll(model, encoded, pad_index=0, use_theme=use_theme)  # padded batches
        assert count == expected_count and nll == pytest.approx(expected_nll, rel=1e-5)
        assert math.exp(nll / count) == pytest.approx(math.exp(expected_nll / expected_count), rel=1e-5)
    # per sequence (jpipe score), in the input order
    pairs = sequence_nll(model, [e.ids for e in encoded], [0] * len(encoded), pad_index=0, batch_size=5)
    for item, (nll, count) in zip(encoded, pairs, strict=True):
        assert (nll, count) == (pytest.approx(_forward_nll(model, [item], use_theme=False)[0], rel=1e-5), len(item.ids) - 1)
    # forward's scores are log-probabilities: they sum to one
    log_probs, _ = model(torch.tensor([encoded[0].ids]))
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(1, len(encoded[0].ids)), atol=1e-5)


def test_the_adaptive_loss_is_the_mean_nll_without_padding_and_with_the_any_theme_slot():
    model = _adaptive_model()
    model.eval()
    encoded = _sequences()
    (tokens, _), *_ = make_batches(encoded, batch_size=len(encoded), pad_index=0)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    expected_nll, expected_count = _forward_nll(model, encoded, use_theme=False)
    with torch.no_grad():
        loss, _ = model.adaptive_loss(inputs, targets, ignore_index=0)
        assert float(loss) == pytest.approx(expected_nll / expected_count, rel=1e-5)
        # pretraining's loss (pipeline.training.pretrain.lm_loss) on one unpadded sequence: the "any theme" slot
        ids = torch.tensor([encoded[0].ids])
        loss, _ = lm_loss(model, ids[:, :-1], ids[:, 1:], None)
        nll, count = _forward_nll(model, encoded[:1], use_theme=False)
        assert float(loss) == pytest.approx(nll / count, rel=1e-5)


def test_the_adaptive_generator_learns():
    model = _adaptive_model(seed=1)
    # a learnable language: each word is followed by the next one
    encoded = [Encoded([2, *[4 + (start + k) % 26 for k in range(10)], 3], theme=1 + start % 4) for start in range(26)]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    steps = StepRunner(model=model, optimizer=optimizer, device=torch.device("cpu"), amp=False, grad_clip=1.0)
    before = corpus_nll(model, encoded, pad_index=0)
    losses = []
    for epoch in range(15):
        batches = make_batches(encoded, batch_size=8, pad_index=0, generator=torch.Generator().manual_seed(epoch))
        nll, count = train_pass(model, batches, steps=steps, pad_index=0, bptt=5, theme_dropout=0.25)
        assert count == sum(len(e.ids) - 1 for e in encoded)
        losses.append(nll / count)
    after = corpus_nll(model, encoded, pad_index=0)
    assert losses[-1] < losses[0] / 2 and after[0] / after[1] < before[0] / before[1] / 2


# ------------------------------------------------------------------ the stages
def test_pretrain_and_train_generator_share_the_corpus_vocabulary_and_every_weight(vocab_project):
    config = load_config(vocab_project, CORPUS_VOCAB)
    expected = generator_vocab(vocab_project / TOKENS, config["train_generator"], store_path=vocab_project / EXTRA_TOKENS)
    pretrained, fine_tuned = load_generator(vocab_project / PRETRAINED_GENERATOR_DIR), load_generator(vocab_project / GENERATOR_DIR)
    assert pretrained.vocab.itos == fine_tuned.vocab.itos == expected.itos
    assert fine_tuned.model.adaptive is not None and not fine_tuned.model.tie_weights and fine_tuned.theme_conditioned
    weights = load_state_dict(vocab_project / GENERATOR_DIR / "model.safetensors")
    source = load_state_dict(vocab_project / PRETRAINED_GENERATOR_DIR / "model.safetensors")
    assert weights.keys() == source.keys() and any(name.startswith("adaptive.") for name in weights)
    for name, tensor in source.items():
        assert torch.equal(weights[name], tensor), name
    metrics = pretrained.metrics
    assert metrics["vocab_size"] == VOCAB_SIZE + len(SPECIALS) and 0 <= metrics["dev_unk_rate"] < 1
    assert metrics["knbc_test_unk_rate"] == metrics["text"]["knbc_test_unk_rate"]
    records = [json.loads(line) for line in (vocab_project / PRETRAINED_GENERATOR_DIR / "train_log.jsonl").read_text().splitlines()]
    assert records[-1]["dev_perplexity"] < records[0]["dev_perplexity"]  # pretraining learns with the adaptive softmax


def test_train_generator_refuses_a_pretrained_lm_of_another_vocab_size(vocab_project, tmp_path):
    project = tmp_path / "copy"
    shutil.copytree(vocab_project, project)
    with pytest.raises(ModelError) as error:
        run_stage(project, "train_generator", [*TINY_GENERATOR, "train_generator.vocab_size=30"])
    assert error.value.code == "E318" and "vocab_size" in str(error.value)


def test_sampling_works_on_the_adaptive_generator(vocab_project):
    generator = Generator.from_dir(vocab_project / GENERATOR_DIR)
    kwargs = dict(prompt="", num=3, max_tokens=12, temperature=1.0, top_k=5, top_p=0.9, theme="Kyoto")
    first = generator.generate(seed=5, **kwargs).samples
    assert len(first) == 3 and any(first) and generator.generate(seed=5, **kwargs).samples == first
    assert all("<unk>" not in text and "<s>" not in text for text in first)


def test_evaluation_reports_the_unk_rates_in_the_generators_vocabulary(vocab_project):
    run_stage(vocab_project, "evaluate_generator", [*CORPUS_VOCAB, "evaluate_generator.num_samples=1"])
    report = json.loads((vocab_project / GENERATOR_REPORT).read_text(encoding="utf-8"))
    test, pretraining = report["test"], report["pretraining"]
    targets = report["lstm"]["targets"]
    assert (
        pretraining["lm_before_fine_tuning"]["targets"]
        == targets
        == pretraining["ngram_same_text"]["targets"]
        == report["ngram"]["targets"]
    )
    assert test["vocabulary_size"] == VOCAB_SIZE + len(SPECIALS) and test["unk_target_rate"] == round(test["oov_units"] / targets, 4)
    assert "most frequent" in test["unknown_word_handling"]
    # the pretraining text is in the generator's vocabulary: its <unk> share is that of the corpus vocabulary
    config = load_config(vocab_project, CORPUS_VOCAB)
    paths = {"tokens_path": vocab_project / TOKENS, "store_path": vocab_project / EXTRA_TOKENS, "section": config["pretrain_lm"]}
    corpus = pretraining_text(**paths, generator=config["train_generator"])
    default = pretraining_text(**paths, generator=load_config(vocab_project, TINY_GENERATOR)["train_generator"])
    assert pretraining["dev_unk_rate"] == corpus.stats["dev_unk_rate"] < default.stats["dev_unk_rate"]
    table = (vocab_project / GENERATOR_TABLE).read_text(encoding="utf-8")
    assert f"| KNBC test (the targets above) | {targets} | {test['unk_target_rate']:.2%} |" in table
    assert f"| pretraining text, held-apart documents | {pretraining['dev_tokens']} | {pretraining['dev_unk_rate']:.2%} |" in table
