"""The seq2seq extractor model (pipeline.models.seq2seq) on hand-written sentences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.opinions import REC, SEP, TYPES, linearize, parse
from pipeline.models.seq2seq import (
    TARGET_SPECIALS,
    Seq2SeqExtractor,
    decode_ids,
    encode_source,
    encode_target,
    pad_sources,
    pad_targets,
    sequence_nll,
    stepwise_target_log_probs,
)
from pipeline.models.vocab import Vocab


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: more threads only spin on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# (text, tokens, records): the expression is an adjective, the target the noun before が/は.
SENTENCES = [
    ("ラーメンが美味しい。", ["ラーメン", "が", "美味しい", "。"], [("批評＋", "美味しい", "ラーメン")]),
    ("店は狭い。", ["店", "は", "狭い", "。"], [("批評−", "狭い", "店")]),
    ("電池がすぐ切れる。", ["電池", "が", "すぐ", "切れる", "。"], [("メリット−", "すぐ切れる", "電池")]),
    ("また行きたい。", ["また", "行き", "たい", "。"], []),
    ("寺が綺麗だ。", ["寺", "が", "綺麗", "だ", "。"], [("感情＋", "綺麗だ", "寺")]),
    ("今日は雨。", ["今日", "は", "雨", "。"], []),
]


def _data():
    examples = []
    for text, tokens, triples in SENTENCES:
        records = [{"type": t, "expression": e, "target": g} for t, e, g in triples]
        examples.append((text, tokens, records, linearize(records, text=text, tokens=tokens)))
    source = Vocab.build(tokens for _, tokens, _, _ in examples)
    # a target vocabulary WITHOUT the content words: everything but types and separators must be copied
    target = Vocab([*TARGET_SPECIALS, SEP, REC, *TYPES])
    return examples, source, target


def _model(target: Vocab, source: Vocab, **kwargs) -> Seq2SeqExtractor:
    torch.manual_seed(0)
    return Seq2SeqExtractor(
        source_vocab_size=len(source), target_vocab_size=len(target), embedding_dim=16, hidden_size=24, attention_size=16, **kwargs
    )


def test_encode_source_extends_the_vocabulary():
    _, source, target = _data()
    item = encode_source(["ラーメン", "が", "ラーメン", "<sep>"], source_vocab=source, target_vocab=target, max_tokens=10)
    size = len(target)
    assert item.oov == ["ラーメン", "が"]
    assert item.extended_ids.tolist() == [size, size + 1, size, target.stoi[SEP]]
    ids = encode_target(["批評＋", SEP, "ラーメン", "謎"], item, target_vocab=target, copy=True)
    assert ids.tolist() == [target.stoi["批評＋"], target.stoi[SEP], size, target.unk_index, target.stoi["</s>"]]
    assert encode_target(["ラーメン"], item, target_vocab=target, copy=False).tolist()[0] == target.unk_index
    assert decode_ids([size + 1, target.stoi[SEP]], item, target_vocab=target) == ["が", SEP]


def _batch(examples, source, target, *, copy: bool = True):
    items = [encode_source(tokens, source_vocab=source, target_vocab=target, max_tokens=20) for _, tokens, _, _ in examples]
    sources = pad_sources(items, target_vocab_size=len(target), device="cpu")
    targets = pad_targets(
        [encode_target(o, i, target_vocab=target, copy=copy) for (*_, o), i in zip(examples, items, strict=True)], device="cpu"
    )
    return items, sources, targets


def test_copy_distribution_sums_to_one_and_attention_masks_padding():
    examples, source, target = _data()
    model = _model(target, source).eval()
    _, sources, targets = _batch(examples, source, target)
    with torch.no_grad():  # every step's full distribution, as decoding computes it
        encoded, state = model.encode(*sources)
        context, previous = (
            encoded.memory.new_zeros(targets.shape[0], encoded.memory.shape[-1]),
            torch.full((targets.shape[0],), model.bos_index),
        )
        for t in range(targets.shape[1]):
            log_probs, state, context, _ = model.step(previous, state, context, encoded)
            assert log_probs.shape == (targets.shape[0], sources[3])
            assert torch.allclose(log_probs.exp().sum(-1), torch.ones(targets.shape[0]), atol=1e-4)
            previous = targets[:, t]
    target_log_probs, attention = model(*sources, targets)
    assert target_log_probs.shape == targets.shape
    lengths = sources[1]
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(attention[row, :, length:] == 0)
    nll, count = sequence_nll(target_log_probs, targets)
    assert int(count) == int((targets != 0).sum()) and float(nll.detach()) > 0


@pytest.mark.parametrize("copy", [True, False])
def test_training_path_equals_the_decoding_step(copy):
    """forward() scores the targets with the output layer run once over all steps: the same
    log-probabilities and the same gradients as gathering them from step() one step at a time."""
    examples, source, target = _data()
    model = _model(target, source, copy=copy).eval()  # eval: no dropout, so both paths are deterministic
    _, sources, targets = _batch(examples, source, target, copy=copy)
    mask = targets != 0
    batched, _ = model(*sources, targets)
    stepwise = stepwise_target_log_probs(model, *sources, targets)
    assert torch.allclose(batched[mask], stepwise[mask], atol=1e-5)
    gradients = []
    for loss in ((batched * mask).sum(), (stepwise * mask).sum()):
        model.zero_grad()
        loss.backward()
        gradients.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(gradients[0]) == len(gradients[1])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*gradients, strict=True))


@pytest.mark.parametrize("copy", [True, False])
def test_beam_one_equals_greedy(copy):
    examples, source, target = _data()
    model = _model(target, source, copy=copy).eval()
    for _, tokens, _, _ in examples:
        item = encode_source(tokens, source_vocab=source, target_vocab=target, max_tokens=20)
        tensors = pad_sources([item], target_vocab_size=len(target), device="cpu")
        greedy = model.greedy(*tensors, max_length=12)[0]
        beam = model.beam_search(*tensors, beam=1, max_length=12)
        assert beam.ids == greedy.ids
        assert beam.score == pytest.approx(greedy.score, abs=1e-4)
        assert np.allclose(np.stack(beam.attention), np.stack(greedy.attention)) if greedy.ids else not beam.attention
        wide = model.beam_search(*tensors, beam=4, max_length=12)
        assert wide.score >= greedy.score - 1e-4  # a wider beam never finds a worse finished hypothesis here


def _train(model, examples, source, target, *, steps: int):
    items = [encode_source(tokens, source_vocab=source, target_vocab=target, max_tokens=20) for _, tokens, _, _ in examples]
    targets = [encode_target(o, i, target_vocab=target, copy=model.copy) for (*_, o), i in zip(examples, items, strict=True)]
    sources = pad_sources(items, target_vocab_size=len(target), device="cpu")
    padded = pad_targets(targets, device="cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    for _ in range(steps):
        target_log_probs, _ = model(*sources, padded)
        nll, count = sequence_nll(target_log_probs, padded)
        optimizer.zero_grad()
        (nll / count).backward()
        optimizer.step()
    model.eval()
    hypotheses = model.greedy(*sources, max_length=20)
    return [parse(decode_ids(h.ids, i, target_vocab=target)) for h, i in zip(hypotheses, items, strict=True)]


STEPS = 80


def test_tiny_training_learns_to_copy():
    examples, source, target = _data()
    predicted = _train(_model(target, source, dropout=0.0), examples, source, target, steps=STEPS)
    for (_, _, gold, _), records in zip(examples, predicted, strict=True):
        assert [{k: r[k] for k in ("type", "expression", "target")} for r in records] == gold


def test_without_copy_the_words_cannot_be_written():
    examples, source, target = _data()
    predicted = _train(_model(target, source, dropout=0.0, copy=False), examples, source, target, steps=STEPS)
    # content words are outside the target vocabulary: at best <unk>, never the real expression
    assert not any(
        r["expression"] == g["expression"]
        for (_, _, gold, _), recs in zip(examples, predicted, strict=True)
        for r, g in zip(recs, gold, strict=False)
    )
