"""The n-gram baseline language model (``nltk.lm``, imported lazily), scored on the LSTM's exact targets.

nltk's ``KneserNey`` recomputes continuation counts by scanning every stored
n-gram at each call, which makes scoring a test set take many minutes.
``IndexedKneserNey`` computes the very same numbers from an index built once
(a unit test checks equality with nltk's own class).
"""

from __future__ import annotations

import math
from collections import Counter

from pipeline.errors import ConfigError
from pipeline.models.vocab import BOS, EOS, UNK

SMOOTHINGS = ("kneser_ney", "witten_bell")


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
            self._predictable: int | None = None

        def _continuation_counts(self, word, context=tuple()):
            followers = self._followers.get(context)
            return (followers[word] if followers else 0), self._totals[context]

        def unigram_score(self, word):
            if self._predictable is None:  # distinct entries (nltk's vocabulary may list <unk> twice) but <s>
                self._predictable = len(set(self.vocab)) - 1
            count, total = self._continuation_counts(word)
            return floored_unigram(count, total, seen=len(self._followers.get((), ())), words=self._predictable, discount=self.discount)

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


def floored_unigram(count: int, total: int, *, seen: int, words: int, discount: float) -> float:
    """Kneser-Ney's continuation unigram ``count / total``, interpolated with a uniform distribution over the
    ``words`` that can be predicted when the text has only ``seen`` of them (a corpus vocabulary): nltk would give
    the others probability 0, and the perplexity would be infinite.

    p(w) = max(c(w) - d, 0) / T + (d * S / T) / P: it sums to 1 over the P words. When the text has every word the
    value is nltk's own, so the numbers of a vocabulary built from the text do not change.
    """
    if seen >= words:
        return count / total
    return max(count - discount, 0.0) / total + discount * seen / total / words


def pad_sentence(units: list[str], *, order: int) -> list[str]:
    """``order - 1`` sentence starts (context only), the units, one sentence end (a target)."""
    return [BOS] * (order - 1) + list(units) + [EOS]


def fit_ngram(sentences: list[list[str]], *, vocabulary: list[str], order: int, smoothing: str, discount: float = 0.75):
    """An interpolated nltk.lm model over ``sentences`` (already mapped to ``vocabulary``, OOV -> ``<unk>``).

    n-grams ending in ``<s>`` are not counted: ``<s>`` is never predicted, so it
    must not take probability mass (the LSTM never sees it as a target either).
    """
    from nltk.lm import KneserNeyInterpolated, Vocabulary, WittenBellInterpolated
    from nltk.util import everygrams

    nltk_vocab = Vocabulary(vocabulary, unk_cutoff=1, unk_label=UNK)
    if smoothing == "kneser_ney":
        model = KneserNeyInterpolated(order, discount=discount, vocabulary=nltk_vocab)
    elif smoothing == "witten_bell":
        model = WittenBellInterpolated(order, vocabulary=nltk_vocab)
    else:
        raise ConfigError(
            "E104",
            f"Unknown n-gram smoothing {smoothing!r}.",
            hint=f"Set evaluate_generator.ngram_smoothing to one of: {', '.join(SMOOTHINGS)}.",
        )
    text = ([gram for gram in everygrams(pad_sentence(s, order=order), max_len=order) if gram[-1] != BOS] for s in sentences)
    model.fit(text)
    if smoothing == "kneser_ney":
        model.estimator = _indexed_kneser_ney_class()(model.vocab, model.counts, order=order, discount=discount)
    return model


def ngram_nll(model, sentences: list[list[str]], *, order: int) -> tuple[float, int, int]:
    """(sum of -log p in nats, targets, zero-probability targets) of ``sentences`` (mapped to the vocabulary)."""
    total, count, zeros = 0.0, 0, 0
    for units in sentences:
        padded = pad_sentence(units, order=order)
        for position in range(order - 1, len(padded)):
            context = tuple(padded[position - order + 1 : position]) if order > 1 else None
            probability = model.unmasked_score(padded[position], context or None)
            count += 1
            if probability <= 0.0:
                zeros += 1
            else:
                total -= math.log(probability)
    return total, count, zeros


def map_to_vocabulary(units: list[str], *, known: set[str]) -> list[str]:
    return [unit if unit in known else UNK for unit in units]
