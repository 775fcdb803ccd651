"""Sampling filters on hand-made distributions, seeds, greedy decoding."""

import math

import pytest
import torch

from pipeline.models.sampling import filter_logits, sample_next, seeded_generator, top_k_filter, top_p_filter, validate_sampling


def logits_of(probs):
    return torch.log(torch.tensor([probs], dtype=torch.float32))


def kept(logits):
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def test_top_k_keeps_the_k_most_likely():
    logits = logits_of([0.1, 0.4, 0.05, 0.3, 0.15])
    assert sorted(kept(top_k_filter(logits, 2))) == [1, 3]
    assert sorted(kept(top_k_filter(logits, 3))) == [1, 3, 4]
    # 0 and k >= vocabulary keep everything
    assert kept(top_k_filter(logits, 0)) == [0, 1, 2, 3, 4]
    assert kept(top_k_filter(logits, 9)) == [0, 1, 2, 3, 4]


def test_top_k_keeps_ties_with_the_kth_value():
    logits = logits_of([0.3, 0.3, 0.3, 0.1])
    assert kept(top_k_filter(logits, 2)) == [0, 1, 2]


def test_top_k_renormalised_probabilities():
    probs = torch.softmax(top_k_filter(logits_of([0.1, 0.4, 0.05, 0.3, 0.15]), 2), dim=-1)[0]
    assert probs.tolist() == pytest.approx([0, 0.4 / 0.7, 0, 0.3 / 0.7, 0], abs=1e-6)


@pytest.mark.parametrize(
    "p, expected",
    [
        (0.5, [0]),  # the top token alone has mass 0.5 >= p
        (0.55, [0, 1]),
        (0.8, [0, 1]),  # 0.5 + 0.3 reaches 0.8 exactly: the third is not needed
        (0.81, [0, 1, 2]),
        (0.96, [0, 1, 2, 3]),
        (1.0, [0, 1, 2, 3]),
        (0.01, [0]),  # the most likely token is always kept
    ],
)
def test_top_p_keeps_the_smallest_nucleus(p, expected):
    # shuffled order, to check the mapping back from sorted positions
    probs = [0.15, 0.5, 0.05, 0.3]  # ranks: index 1, 3, 0, 2
    rank_to_index = [1, 3, 0, 2]
    assert sorted(kept(top_p_filter(logits_of(probs), p))) == sorted(rank_to_index[r] for r in expected)


def test_top_p_works_per_row():
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]]))
    filtered = top_p_filter(logits, 0.7)
    assert torch.isfinite(filtered).tolist() == [[True, False, False], [True, True, False]]


def test_filter_order_temperature_then_top_k_then_top_p():
    # temperature 2 flattens [0.5, 0.3, 0.15, 0.05]; top-k 3 drops the last; top-p on the rest
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    flat = torch.softmax(logits / 2.0, dim=-1)[0, :3]
    flat = flat / flat.sum()
    filtered = filter_logits(logits, temperature=2.0, top_k=3, top_p=float(flat[0] + flat[1]) + 1e-4)
    assert kept(filtered) == [0, 1, 2]
    filtered = filter_logits(logits, temperature=2.0, top_k=3, top_p=float(flat[0] + flat[1]) - 1e-4)
    assert kept(filtered) == [0, 1]


def test_same_seed_same_samples_other_seed_other_samples():
    logits = torch.zeros(4, 50)  # uniform over 50 tokens, 4 rows

    def draw(seed):
        generator = seeded_generator(seed)
        return [sample_next(logits, generator=generator).tolist() for _ in range(10)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_sampling_does_not_use_the_global_rng():
    logits = torch.zeros(1, 50)
    torch.manual_seed(0)
    first = sample_next(logits, generator=seeded_generator(3)).item()
    torch.manual_seed(123)
    assert sample_next(logits, generator=seeded_generator(3)).item() == first


@pytest.mark.parametrize("temperature", [0.0, 1e-9, 1e-3])
def test_temperature_to_zero_is_argmax(temperature):
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.25, 0.25], [0.4, 0.11, 0.11, 0.38]]))
    generator = seeded_generator(0)
    for _ in range(20):
        assert sample_next(logits, temperature=temperature, generator=generator).tolist() == [1, 0]


def test_sample_frequencies_follow_the_filtered_distribution():
    logits = logits_of([0.5, 0.3, 0.15, 0.05]).repeat(4000, 1)
    counts = torch.bincount(sample_next(logits, top_k=2, generator=seeded_generator(1)), minlength=4).tolist()
    assert counts[2] == counts[3] == 0
    assert counts[0] / 4000 == pytest.approx(0.625, abs=0.03)


def test_banned_tokens_are_never_chosen():
    logits = logits_of([0.97, 0.01, 0.01, 0.01]).repeat(500, 1)
    chosen = sample_next(logits, banned=[0], generator=seeded_generator(2))
    assert 0 not in chosen.tolist()
    assert sample_next(logits[:1], temperature=0, banned=[0]).item() in (1, 2, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=-1.0, top_k=0, top_p=1.0),
        dict(temperature=math.nan, top_k=0, top_p=1.0),
        dict(temperature=1.0, top_k=-1, top_p=1.0),
        dict(temperature=1.0, top_k=0, top_p=0.0),
        dict(temperature=1.0, top_k=0, top_p=1.5),
    ],
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError, match=r"E109: (temperature|top_k|top_p) must be"):
        validate_sampling(**kwargs)
