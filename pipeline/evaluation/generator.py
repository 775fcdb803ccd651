"""Stage ``evaluate_generator``: test perplexity of the LSTM against an ``nltk.lm`` n-gram baseline.

Both models are scored on exactly the same events, so the two numbers compare:

- the same units: the model's level (GiNZA surface tokens or characters) of the
  test-split sentences (articles held out from training);
- the same vocabulary: the generator's ``vocab.json``. Test units outside it
  become ``<unk>`` for both models, and the n-gram model is trained on the
  training sentences with the same ``<unk>`` mapping, so ``<unk>`` has counts;
- the same targets: each sentence's units and its ``</s>``, each predicted once.
  Sentence starts are context (``<s>``), never predicted. The LSTM gets no theme
  ("any theme" slot), because the n-gram model does not see it either; the
  perplexity with the true theme is reported next to it.

Perplexity = exp(total negative log-likelihood / number of targets) (``pipeline.metrics``);
the n-gram model is ``pipeline.evaluation.ngram``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.evaluation.ngram import fit_ngram, map_to_vocabulary, ngram_nll, pad_sentence
from pipeline.io import write_json
from pipeline.metrics import perplexity

__all__ = ["evaluate_generator_stage", "fit_ngram", "map_to_vocabulary", "ngram_nll", "pad_sentence"]

logger = logging.getLogger(__name__)

# Sampling settings of the report's example texts.
SAMPLE_SETTINGS = {"max_tokens": 60, "temperature": 0.8, "top_k": 40, "top_p": 0.9}


# --------------------------------------------------------------------- stage
def _score_lstm(loaded, test_rows: list[dict], *, device) -> dict[str, Any]:
    """Test perplexity of the LSTM on the unit it was trained on (sentences or articles), without theme information."""
    from pipeline.training.language_model import build_sequences, corpus_nll, encode, target_count

    vocab = loaded.vocab
    test_encoded = encode(build_sequences(test_rows, level=loaded.level, unit=loaded.unit), vocab)
    started = time.perf_counter()
    nll, count = corpus_nll(loaded.model, test_encoded, pad_index=vocab.pad_index, device=device)
    lstm = {
        "perplexity": round(perplexity(nll, count), 3),
        "level": loaded.level,
        "sequence_unit": loaded.unit,
        "theme_information": False,
        "targets": count,
        "score_seconds": round(time.perf_counter() - started, 3),
        "device": device.type,
        "model": loaded.metrics.get("config", {}),
    }
    if loaded.theme_conditioned:
        with_theme = corpus_nll(loaded.model, test_encoded, pad_index=vocab.pad_index, device=device, use_theme=True)
        lstm["perplexity_with_theme"] = round(perplexity(*with_theme), 3)
    if count != target_count(test_encoded):
        raise RuntimeError(f"The LSTM scored {count} targets, the test set has {target_count(test_encoded)}")
    return lstm


def _unit_sentences(loaded, rows: list[dict]) -> list[list[str]]:
    """The rows' units in the model's vocabulary (others -> <unk>)."""
    from pipeline.training.language_model import sentence_units

    known = set(loaded.vocab.itos)
    return [map_to_vocabulary(sentence_units(r, level=loaded.level), known=known) for r in rows]


def _score_ngram(loaded, train_sentences: list[list[str]], test_rows: list[dict], *, section: dict) -> dict[str, Any]:
    """Test perplexity of the n-gram model fitted on ``train_sentences`` (units already in the model's
    vocabulary): same units, same vocabulary and <unk> mapping, same targets as the LSTM."""
    from pipeline.models.vocab import PAD
    from pipeline.training.language_model import sentence_units

    order, smoothing = section["ngram_order"], section["ngram_smoothing"]
    known = set(loaded.vocab.itos)
    test_sentences = [map_to_vocabulary(sentence_units(r, level=loaded.level), known=known) for r in test_rows]
    started = time.perf_counter()
    model = fit_ngram(
        train_sentences,
        vocabulary=[t for t in loaded.vocab.itos if t != PAD],
        order=order,
        smoothing=smoothing,
        discount=section["ngram_discount"],
    )
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    total, count, zeros = ngram_nll(model, test_sentences, order=order)
    score_seconds = time.perf_counter() - started
    if zeros:
        logger.warning(
            "The n-gram model gives probability 0 to %d test targets: its perplexity is infinite. "
            "With train_generator.min_count = 1 no training unit is <unk>, so test <unk> is unseen; use min_count >= 2.",
            zeros,
        )
    return {
        "perplexity": None if zeros else round(perplexity(total, count), 3),
        "order": order,
        "smoothing": smoothing,
        **({"discount": section["ngram_discount"]} if smoothing == "kneser_ney" else {}),
        "library": "nltk.lm " + ("KneserNeyInterpolated" if smoothing == "kneser_ney" else "WittenBellInterpolated"),
        "zero_probability_targets": zeros,
        "targets": count,
        "fit_seconds": round(fit_seconds, 3),
        "score_seconds": round(score_seconds, 3),
        "targets_per_second": round(count / max(score_seconds, 1e-9), 1),
    }


def _score_pretraining(ctx, loaded, test_rows: list[dict], *, lstm: dict, device) -> dict[str, Any]:
    """init = pretrained: the LM before fine-tuning, and an n-gram model fitted on the same text as the pretrained LM
    (KNBC's training articles + the sampled corpus), all on the fine-tuned model's vocabulary and test targets."""
    from pipeline.models.language_model import load_generator
    from pipeline.paths import EXTRA_TOKENS, PRETRAINED_GENERATOR_DIR, TOKENS
    from pipeline.training.pretrain_generator import pretraining_text, text_sentences

    pretrained = load_generator(ctx.input(PRETRAINED_GENERATOR_DIR), device=device)
    before = _score_lstm(pretrained, test_rows, device=device)
    text = pretraining_text(
        tokens_path=ctx.input(TOKENS),
        store_path=ctx.input(EXTRA_TOKENS),
        section=ctx.config["pretrain_lm"],
        generator=ctx.config["train_generator"],
    )
    ngram = _score_ngram(loaded, text_sentences(text), test_rows, section=ctx.section)
    if ngram["targets"] != lstm["targets"] or before["targets"] != lstm["targets"]:
        raise RuntimeError("The pretraining rows scored other targets than the LSTM")
    ratio = round(lstm["perplexity"] / ngram["perplexity"], 4) if ngram["perplexity"] else None
    logger.info("pretrained: LM before fine-tuning %.2f; n-gram on the pretraining text %s", before["perplexity"], ngram["perplexity"])
    return {"lm_before_fine_tuning": before, "ngram_same_text": ngram, "lstm_to_ngram_same_text_ratio": ratio, "text": text.stats}


def _samples(loaded, *, section: dict) -> list[dict[str, Any]]:
    """One sample per theme in turn (or unconditioned), no prompt."""
    from pipeline.data.labels import THEMES
    from pipeline.inference.generator import Generator

    generator = Generator(loaded)
    samples = []
    for index in range(section["num_samples"]):
        theme = THEMES[index % len(THEMES)] if loaded.theme_conditioned else None
        result = generator.generate(prompt="", num=1, theme=theme, seed=section["seed"] + index, **SAMPLE_SETTINGS)
        samples.append({"theme": theme, "seed": section["seed"] + index, "text": result.samples[0]})
    return samples


def _test_summary(loaded, test_rows: list[dict], *, targets: int) -> dict[str, Any]:
    from pipeline.training.language_model import sentence_units

    known = set(loaded.vocab.itos)
    test_units = [u for s in test_rows for u in sentence_units(s, level=loaded.level)]
    oov = sum(1 for u in test_units if u not in known)
    return {
        "split": "test (articles held out from training)",
        "sentences": len(test_rows),
        "units": len(test_units),
        "targets": targets,
        "oov_units": oov,
        "oov_rate": round(oov / max(len(test_units), 1), 4),
        "vocabulary_size": len(loaded.vocab),
        "unknown_word_handling": f"units outside vocab.json (training units seen < {loaded.min_count} times) -> <unk> for both models",
    }


def evaluate_generator_stage(ctx) -> dict[str, Any]:
    import torch

    from pipeline.models.language_model import load_generator
    from pipeline.models.runtime import pick_device
    from pipeline.paths import GENERATOR_DIR, GENERATOR_REPORT, TOKENS
    from pipeline.text.tokenize import read_token_rows

    section = ctx.section
    device = pick_device("auto")
    loaded = load_generator(ctx.input(GENERATOR_DIR), device=device)
    rows = list(read_token_rows(ctx.input(TOKENS)))
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]
    lstm = _score_lstm(loaded, test_rows, device=device)
    ngram = _score_ngram(loaded, _unit_sentences(loaded, train_rows), test_rows, section=section)
    if ngram["targets"] != lstm["targets"]:
        raise RuntimeError(f"LSTM and n-gram scored different numbers of targets ({lstm['targets']} vs {ngram['targets']})")
    ngram_ppl = ngram["perplexity"]
    report = {
        "lstm": lstm,
        "ngram": ngram,
        "lstm_to_ngram_ratio": round(lstm["perplexity"] / ngram_ppl, 4) if ngram_ppl else None,
        "test": _test_summary(loaded, test_rows, targets=lstm["targets"]),
        "sampling": SAMPLE_SETTINGS,
        "samples": _samples(loaded, section=section),
        "torch_version": torch.__version__,
    }
    if ctx.config["train_generator"]["init"] == "pretrained":
        report["pretraining"] = _score_pretraining(ctx, loaded, test_rows, lstm=lstm, device=device)
    write_json(ctx.output(GENERATOR_REPORT), report)
    logger.info(
        "test perplexity: LSTM %.2f, %d-gram %s %s", lstm["perplexity"], section["ngram_order"], section["ngram_smoothing"], ngram_ppl
    )
    return {
        "lstm_perplexity": lstm["perplexity"],
        "ngram_perplexity": ngram_ppl if ngram_ppl is not None else "inf",
        "ratio": report["lstm_to_ngram_ratio"] if ngram_ppl is not None else "n/a",
        "ngram_score_seconds": ngram["score_seconds"],
    }
