"""Shared neural helpers: vocabulary, word2vec text reader, embedding tables, weights I/O."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.models.model_dir import load_weights, save_state_dict  # noqa: E402
from pipeline.models.vocab import Vocab, embedding_matrix, read_word2vec_text  # noqa: E402


def test_vocab_min_count_and_specials():
    vocab = Vocab.build([["a", "b", "a"], ["c", "a", "b"]], min_count=2)
    assert vocab.itos == ["<pad>", "<unk>", "a", "b"]
    assert vocab.encode(["a", "zzz"]) == [2, 1]
    assert Vocab.from_json(vocab.to_json()).itos == vocab.itos


def test_word2vec_text_reader_and_embedding_matrix(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("2 3\n京都 1 0 0\n寺 0 1 0.5\n", encoding="utf-8")
    words, vectors = read_word2vec_text(path)
    assert words == ["京都", "寺"] and vectors.shape == (2, 3) and vectors[1, 2] == pytest.approx(0.5)
    vocab = Vocab(["<pad>", "<unk>", "寺", "店"])
    matrix, coverage = embedding_matrix(vocab, words, vectors)
    assert np.allclose(matrix[2], [0, 1, 0.5]) and np.allclose(matrix[0], 0)
    assert coverage == pytest.approx(0.5)


def test_tied_weights_round_trip(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(5, 3)
            self.decoder = torch.nn.Linear(3, 5, bias=False)
            self.decoder.weight = self.embedding.weight

    model = Tied()
    save_state_dict(model, tmp_path / "w.safetensors")
    loaded = Tied()
    load_weights(loaded, tmp_path / "w.safetensors")
    assert torch.equal(loaded.embedding.weight, model.embedding.weight)
    assert loaded.decoder.weight is loaded.embedding.weight
