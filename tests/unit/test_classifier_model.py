"""The BiLSTM + attention model: masking, every option, save -> load round trip."""

from __future__ import annotations

import itertools
import json

import pytest

torch = pytest.importorskip("torch")

from pipeline.models.classifier import ATTENTIONS, CELLS, MERGE_MODES, AttentionClassifier, lengths_to_mask, load_classifier  # noqa: E402
from pipeline.models.model_dir import write_model_dir  # noqa: E402
from pipeline.models.vocab import Vocab  # noqa: E402


def make_model(**overrides) -> AttentionClassifier:
    torch.manual_seed(0)
    args = {"vocab_size": 30, "embedding_dim": 6, "num_classes": 3, "hidden_size": 5, "attention_size": 4, "dropout": 0.0}
    args.update(overrides)
    return AttentionClassifier(**args).eval()


def batch(lengths: list[int], width: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (never 0) padded with 0 to ``width`` columns."""
    generator = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(2, 30, (length,), generator=generator)
    return ids, torch.tensor(lengths)


def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([3, 1]), 4)
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False]]


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_padding_gets_zero_attention_and_weights_sum_to_one(attention):
    model = make_model(attention=attention)
    ids, lengths = batch([5, 2, 3], width=7)
    _, weights = model(ids, lengths)
    assert weights.shape == (3, 7)
    for row, length in enumerate(lengths.tolist()):
        assert torch.all(weights[row, length:] == 0), "padding must get exactly zero weight"
        assert torch.all(weights[row, :length] > 0)
        assert weights[row].sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("cell,merge,attention", list(itertools.product(CELLS, MERGE_MODES, ATTENTIONS)))
def test_output_is_invariant_to_extra_padding(cell, merge, attention):
    model = make_model(cell=cell, bidirectional_merge=merge, attention=attention, num_layers=2)
    ids, lengths = batch([4, 6, 1])
    logits, weights = model(ids, lengths)
    wide = torch.cat([ids, torch.zeros(3, 9, dtype=torch.long)], dim=1)  # 9 more padding columns
    wide_logits, wide_weights = model(wide, lengths)
    torch.testing.assert_close(wide_logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wide_weights[:, : ids.shape[1]], weights, atol=1e-6, rtol=1e-5)
    # A row alone gives the same result as inside a padded batch.
    alone_logits, _ = model(ids[2:3, :1], lengths[2:3])
    torch.testing.assert_close(alone_logits[0], logits[2], atol=1e-5, rtol=1e-5)


def test_padding_token_values_are_ignored():
    """Garbage in the padded positions (not just id 0) must not change anything."""
    model = make_model()
    ids, lengths = batch([3, 5])
    noisy = ids.clone()
    noisy[0, 3:] = 7
    torch.testing.assert_close(model(noisy, lengths)[0], model(ids, lengths)[0])


@pytest.mark.parametrize("cell,merge", list(itertools.product(CELLS, MERGE_MODES)))
def test_every_cell_and_merge_mode_trains(cell, merge):
    model = make_model(cell=cell, bidirectional_merge=merge)
    model.train()
    ids, lengths = batch([4, 2, 6, 3])
    labels = torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        logits, _ = model(ids, lengths)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    expected_width = 10 if merge == "concat" else 5
    assert model.output.in_features == expected_width
    assert losses[-1] < losses[0] * 0.5, f"{cell}/{merge} did not learn: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="E109: AttentionClassifier: bidirectional_merge"):
        make_model(bidirectional_merge="max")
    with pytest.raises(ValueError, match="E109: AttentionClassifier: cell"):
        make_model(cell="rnn")


def test_frozen_embeddings_stay_fixed():
    model = make_model(freeze_embeddings=True)
    table = torch.arange(30 * 6, dtype=torch.float32).reshape(30, 6) / 100
    model.load_pretrained_embeddings(table)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids, lengths = batch([3, 4])
    loss = model(ids, lengths)[0].sum()
    loss.backward()
    optimizer.step()
    torch.testing.assert_close(model.embedding.weight, table)


def test_save_load_round_trip_on_cpu(tmp_path):
    args = {
        "vocab_size": 30,
        "embedding_dim": 6,
        "num_classes": 3,
        "hidden_size": 5,
        "num_layers": 2,
        "cell": "gru",
        "bidirectional_merge": "mul",
        "attention": "scaled_dot",
        "attention_size": 4,
        "dropout": 0.2,
        "embedding_dropout": 0.1,
        "freeze_embeddings": False,
        "padding_index": 0,
    }
    torch.manual_seed(3)
    model = AttentionClassifier(**args).eval()
    vocab = Vocab(["<pad>", "<unk>"] + [f"w{i}" for i in range(28)])
    write_model_dir(
        tmp_path / "m",
        model=model,
        architecture="AttentionClassifier",
        model_args=args,
        vocab=vocab,
        labels=["a", "b", "c"],
        metrics={"dev_macro_f1": 0.5},
        extra={"token_field": "lemma", "max_tokens": 17, "task": "sentiment"},
    )
    # Everything but the weights is plain JSON.
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_args"] == args
    loaded = load_classifier(tmp_path / "m", device="cpu")
    assert loaded.labels == ["a", "b", "c"]
    assert (loaded.token_field, loaded.max_tokens, loaded.task) == ("lemma", 17, "sentiment")
    assert not loaded.model.training
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())
    ids, lengths = batch([4, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids, lengths)[0], model(ids, lengths)[0])
    assert loaded.encode([]) == [vocab.unk_index]
    assert loaded.encode(["w0", "zzz"]) == [2, vocab.unk_index]


def test_weights_file_holds_cpu_tensors_without_pickle(tmp_path):
    from safetensors import safe_open

    model = make_model()
    write_model_dir(
        tmp_path / "m",
        model=model,
        architecture="AttentionClassifier",
        model_args={},
        vocab=Vocab(["<pad>", "<unk>"]),
        labels=["a", "b", "c"],
        metrics={},
    )
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt", device="cpu") as handle:
        names = set(handle.keys())
    assert "embedding.weight" in names and "output.weight" in names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_model_loads_on_cpu(tmp_path):
    args = {"vocab_size": 30, "embedding_dim": 6, "num_classes": 3, "hidden_size": 5, "attention_size": 4}
    model = AttentionClassifier(**args).cuda().eval()
    write_model_dir(
        tmp_path / "m",
        model=model,
        architecture="AttentionClassifier",
        model_args=args,
        vocab=Vocab(["<pad>", "<unk>"]),
        labels=["a", "b", "c"],
        metrics={},
    )
    loaded = AttentionClassifier.from_dir(tmp_path / "m", device="cpu")
    ids, lengths = batch([3, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, lengths)[0], model(ids.cuda(), lengths)[0].cpu(), atol=1e-4, rtol=1e-4)


def test_word_dropout_hides_tokens_only_in_training_and_never_padding():
    model = make_model(word_dropout=0.5, dropout=0.0)
    ids, lengths = batch([6, 3], width=8)
    seen = {}

    def capture(module, inputs, output):
        seen["ids"] = inputs[0].clone()

    model.embedding.register_forward_hook(capture)
    model.train()
    torch.manual_seed(0)
    model(ids, lengths)
    hidden = seen["ids"]
    assert (hidden[ids == 0] == 0).all(), "padding must stay padding"
    assert ((hidden == 1) & (ids != 0)).any(), "some real tokens become <unk> in training"
    model.eval()
    model(ids, lengths)
    assert torch.equal(seen["ids"], ids), "no word dropout at inference"
