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

Perplexity = exp(total negative log-likelihood / number of targets).

nltk's ``KneserNey`` recomputes continuation counts by scanning every stored
n-gram at each call, which makes scoring a test set take many minutes.
``IndexedKneserNey`` computes the very same numbers from an index built once
(a unit test checks equality with nltk's own class).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

from pipeline.io import write_json

logger = logging.getLogger(__name__)

# Sampling settings of the report's example texts.
SAMPLE_SETTINGS = {"max_tokens": 60, "temperature": 0.8, "top_k": 40, "top_p": 0.9}


# -------------------------------------------------------------------- n-gram
def _indexed_kneser_ney_class():
    """nltk's KneserNey smoothing with O(1) continuation counts (class built lazily: nltk is imported only here)."""
    from nltk.lm.smoothing import KneserNey, _count_values_gt_zero

    class IndexedKneserNey(KneserNey):
        """Same formulas as ``nltk.lm.smoothing.KneserNey``; counts come from an index instead of a scan.

        nltk: continuation(word, context) = (number of (order+2)-gram contexts
        ``(x, *context)`` followed by ``word``, total distinct followers of all
        such contexts). The index stores both for every context once.
        Must be built after the model is fitted (counts do not change afterwards).
        """

        def __init__(self, vocabulary, counter, order, discount=0.1, **kwargs):
            super().__init__(vocabulary, counter, order, discount=discount, **kwargs)
            self._followers: dict[tuple, Counter] = {}
            self._totals: Counter = Counter()
            for length in range(2, order + 1):
                for prefix, followers in counter[length].items():
                    key = prefix[1:]
                    bucket = self._followers.setdefault(key, Counter())
                    for word, count in followers.items():
                        if count > 0:
                            bucket[word] += 1
                            self._totals[key] += 1
            self._distinct_followers: dict[tuple, int] = {}

        def _continuation_counts(self, word, context=tuple()):
            followers = self._followers.get(context)
            return (followers[word] if followers else 0), self._totals[context]

        def alpha_gamma(self, word, context):
            # nltk's formula, with the distinct-follower count of ``context`` cached
            prefix_counts = self.counts[context]
            word_continuation_count, total_count = (
                (prefix_counts[word], prefix_counts.N()) if len(context) + 1 == self._order else self._continuation_counts(word, context)
            )
            distinct = self._distinct_followers.get(context)
            if distinct is None:
                distinct = self._distinct_followers[context] = _count_values_gt_zero(prefix_counts)
            alpha = max(word_continuation_count - self.discount, 0.0) / total_count
            gamma = self.discount * distinct / total_count
            return alpha, gamma

    return IndexedKneserNey


def pad_sentence(units: list[str], order: int) -> list[str]:
    """``order - 1`` sentence starts (context only), the units, one sentence end (a target)."""
    from pipeline.models.vocab import BOS, EOS

    return [BOS] * (order - 1) + list(units) + [EOS]


def fit_ngram(sentences: list[list[str]], *, vocabulary: list[str], order: int, smoothing: str, discount: float = 0.75):
    """An interpolated nltk.lm model over ``sentences`` (already mapped to ``vocabulary``, OOV -> ``<unk>``).

    n-grams ending in ``<s>`` are not counted: ``<s>`` is never predicted, so it
    must not take probability mass (the LSTM never sees it as a target either).
    """
    from nltk.lm import KneserNeyInterpolated, Vocabulary, WittenBellInterpolated
    from nltk.util import everygrams

    from pipeline.models.vocab import BOS, UNK

    nltk_vocab = Vocabulary(vocabulary, unk_cutoff=1, unk_label=UNK)
    if smoothing == "kneser_ney":
        model = KneserNeyInterpolated(order, discount=discount, vocabulary=nltk_vocab)
    elif smoothing == "witten_bell":
        model = WittenBellInterpolated(order, vocabulary=nltk_vocab)
    else:
        raise ValueError(f"unknown smoothing {smoothing!r}")
    text = ([gram for gram in everygrams(pad_sentence(s, order), max_len=order) if gram[-1] != BOS] for s in sentences)
    model.fit(text)
    if smoothing == "kneser_ney":
        model.estimator = _indexed_kneser_ney_class()(model.vocab, model.counts, order=order, discount=discount)
    return model


def ngram_nll(model, sentences: list[list[str]], *, order: int) -> tuple[float, int, int]:
    """(sum of -log p in nats, targets, zero-probability targets) of ``sentences`` (mapped to the vocabulary)."""
    total, count, zeros = 0.0, 0, 0
    for units in sentences:
        padded = pad_sentence(units, order)
        for position in range(order - 1, len(padded)):
            context = tuple(padded[position - order + 1 : position]) if order > 1 else None
            probability = model.unmasked_score(padded[position], context or None)
            count += 1
            if probability <= 0.0:
                zeros += 1
            else:
                total -= math.log(probability)
    return total, count, zeros


def map_to_vocabulary(units: list[str], known: set[str]) -> list[str]:
    from pipeline.models.vocab import UNK

    return [unit if unit in known else UNK for unit in units]


# --------------------------------------------------------------------- stage
def evaluate_generator_stage(ctx) -> dict[str, Any]:
    import torch

    from pipeline.inference.generator import TextGenerator
    from pipeline.data.labels import THEMES
    from pipeline.models.runtime import pick_device
    from pipeline.models.vocab import PAD
    from pipeline.text.tokenize import read_token_rows
    from pipeline.models.language_model import load_generator
    from pipeline.training.language_model import build_sequences, corpus_nll, encode, perplexity, sentence_units, target_count
    from pipeline.paths import GENERATOR_DIR, GENERATOR_REPORT, TOKENS

    section = ctx.section
    order, smoothing = section["ngram_order"], section["ngram_smoothing"]
    device = pick_device("auto")
    loaded = load_generator(ctx.input(GENERATOR_DIR), device=device)
    vocab, level, unit = loaded.vocab, loaded.level, loaded.unit
    known = set(vocab.itos)
    rows = list(read_token_rows(ctx.input(TOKENS)))
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]

    # ---- LSTM: the unit it was trained on (sentences or articles), no theme information
    test_encoded = encode(build_sequences(test_rows, level=level, unit=unit), vocab)
    started = time.perf_counter()
    lstm_nll, lstm_count = corpus_nll(loaded.model, test_encoded, pad_index=vocab.pad_index, device=device)
    lstm_seconds = time.perf_counter() - started
    lstm = {
        "perplexity": round(perplexity(lstm_nll, lstm_count), 3),
        "level": level,
        "sequence_unit": unit,
        "theme_information": False,
        "targets": lstm_count,
        "score_seconds": round(lstm_seconds, 3),
        "device": device.type,
        "model": loaded.metrics.get("config", {}),
    }
    if loaded.theme_conditioned:
        lstm["perplexity_with_theme"] = round(perplexity(*corpus_nll(loaded.model, test_encoded, pad_index=vocab.pad_index, device=device, use_theme=True)), 3)

    # ---- n-gram: same units, same vocabulary and <unk> mapping, same targets
    train_sentences = [map_to_vocabulary(sentence_units(r, level), known) for r in train_rows]
    test_sentences = [map_to_vocabulary(sentence_units(r, level), known) for r in test_rows]
    started = time.perf_counter()
    ngram_model = fit_ngram(train_sentences, vocabulary=[t for t in vocab.itos if t != PAD], order=order, smoothing=smoothing, discount=section["ngram_discount"])
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ngram_total, ngram_count, zeros = ngram_nll(ngram_model, test_sentences, order=order)
    score_seconds = time.perf_counter() - started
    if ngram_count != lstm_count or ngram_count != target_count(test_encoded):
        raise RuntimeError(f"LSTM and n-gram scored different numbers of targets ({lstm_count} vs {ngram_count})")
    if zeros:
        logger.warning("The n-gram model gives probability 0 to %d test targets: its perplexity is infinite. "
                       "With train_generator.min_count = 1 no training unit is <unk>, so test <unk> is unseen; use min_count >= 2.", zeros)
    ngram_ppl = None if zeros else round(math.exp(ngram_total / ngram_count), 3)
    ngram = {
        "perplexity": ngram_ppl,
        "order": order,
        "smoothing": smoothing,
        **({"discount": section["ngram_discount"]} if smoothing == "kneser_ney" else {}),
        "library": "nltk.lm " + ("KneserNeyInterpolated" if smoothing == "kneser_ney" else "WittenBellInterpolated"),
        "zero_probability_targets": zeros,
        "targets": ngram_count,
        "fit_seconds": round(fit_seconds, 3),
        "score_seconds": round(score_seconds, 3),
        "targets_per_second": round(ngram_count / max(score_seconds, 1e-9), 1),
    }

    test_units = [u for s in test_rows for u in sentence_units(s, level)]
    oov = sum(1 for u in test_units if u not in known)

    # ---- samples: one per theme in turn (or unconditioned), no prompt
    generator = TextGenerator(loaded, project_dir=ctx.project_dir)
    samples = []
    for index in range(section["num_samples"]):
        theme = THEMES[index % len(THEMES)] if loaded.theme_conditioned else None
        result = generator.generate(prompt="", num=1, theme=theme, seed=section["seed"] + index, **SAMPLE_SETTINGS)
        samples.append({"theme": theme, "seed": section["seed"] + index, "text": result.samples[0]})

    report = {
        "lstm": lstm,
        "ngram": ngram,
        "lstm_to_ngram_ratio": round(lstm["perplexity"] / ngram_ppl, 4) if ngram_ppl else None,
        "test": {
            "split": "test (articles held out from training)",
            "sentences": len(test_rows),
            "units": len(test_units),
            "targets": lstm_count,
            "oov_units": oov,
            "oov_rate": round(oov / max(len(test_units), 1), 4),
            "vocabulary_size": len(vocab),
            "unknown_word_handling": f"units outside vocab.json (training units seen < {loaded.min_count} times) -> <unk> for both models",
        },
        "sampling": SAMPLE_SETTINGS,
        "samples": samples,
        "torch_version": torch.__version__,
    }
    write_json(ctx.output(GENERATOR_REPORT), report)
    logger.info("test perplexity: LSTM %.2f, %d-gram %s %s", lstm["perplexity"], order, smoothing, ngram_ppl)
    return {
        "lstm_perplexity": lstm["perplexity"],
        "ngram_perplexity": ngram_ppl if ngram_ppl is not None else "inf",
        "ratio": report["lstm_to_ngram_ratio"] if ngram_ppl is not None else "n/a",
        "ngram_score_seconds": ngram["score_seconds"],
    }
