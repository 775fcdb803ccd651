"""LSTM generator: data framing, model, perplexity on toy models, n-gram baseline, resume, generation, CLI.

Everything here runs on a tiny hand-made tokens file in a temporary project;
the real-corpus test is in test_generator_integration.py.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.data.labels import THEMES
from pipeline.errors import PipelineError
from pipeline.inference.generator import Generator, detokenize, resolve_theme
from pipeline.metrics import perplexity
from pipeline.models.language_model import LSTMLanguageModel, generate_ids, load_generator
from pipeline.models.vocab import BOS, EOS, PAD, UNK
from pipeline.paths import GENERATOR_DIR, GENERATOR_REPORT, TOKENS
from pipeline.training.language_model import Encoded, build_sequences, build_vocab, corpus_nll, encode, target_count
from tests.conftest import run_stage

WORDS = {
    "Gourmet": ["ラーメン", "が", "美味しい", "店", "の", "味", "は", "濃い"],
    "Keitai": ["携帯", "の", "電池", "が", "すぐ", "切れる", "画面", "は"],
    "Kyoto": ["京都", "の", "寺", "は", "紅葉", "が", "綺麗", "だ"],
    "Sports": ["野球", "の", "試合", "は", "投手", "が", "強い", "勝つ"],
}


def token_rows(seed: int = 0) -> list[dict]:
    """4 themes x 6 articles x 4 sentences; articles 0-3 train, 4 dev, 5 test."""
    rng = random.Random(seed)
    rows = []
    for theme, words in WORDS.items():
        for article in range(6):
            split = "train" if article < 4 else ("dev" if article == 4 else "test")
            article_id = f"{theme}_{article}"
            for position in range(4):
                surface = [rng.choice(words) for _ in range(rng.randint(2, 6))] + ["。"]
                if split == "test" and position == 0:
                    surface.insert(0, "未知語")  # never in training: <unk>
                if split == "train" and position == 0:
                    surface.insert(0, f"珍語{theme}{article}")  # seen once: <unk> with min_count 2
                rows.append(
                    {
                        "sentence_id": f"{article_id}-{position}",
                        "article_id": article_id,
                        "theme": theme,
                        "sentiment": "neutral",
                        "split": split,
                        "position": position,
                        "text": "".join(surface),
                        "surface": surface,
                        "lemma": surface,
                        "norm": surface,
                        "pos": ["NOUN"] * len(surface),
                        "tag": ["名詞"] * len(surface),
                    }
                )
    return rows


def make_project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    (project / "data" / "tokens").mkdir(parents=True)
    with open(project / TOKENS, "w", encoding="utf-8") as handle:
        for row in token_rows():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (project / "data" / "tokens" / "meta.json").write_text(json.dumps({"split_mode": "C"}), encoding="utf-8")
    return project


TINY = [
    "train_generator.embedding_size=16",
    "train_generator.hidden_size=16",
    "train_generator.num_layers=1",
    "train_generator.min_count=2",
    "train_generator.batch_size=8",
    "train_generator.device=cpu",
    "train_generator.seeds=1",
]


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    project = make_project(tmp_path_factory.mktemp("gen"))
    run_stage(project, "train_generator", [*TINY, "train_generator.epochs=3"])
    return project


# ------------------------------------------------------------------ data framing
def test_sentence_and_article_units_score_the_same_targets():
    rows = [r for r in token_rows() if r["split"] == "train"]
    sentences = build_sequences(rows, level="word", unit="sentence")
    articles = build_sequences(rows, level="word", unit="article")
    assert sentences[0].units[0] == BOS and sentences[0].units[-1] == EOS
    assert len(articles) == 16 and len(sentences) == 64
    # <s> w.. </s> v.. </s>: one <s> per article, one </s> per sentence
    assert sum(a.units.count(EOS) for a in articles) == 64
    assert all(a.units.count(BOS) == 1 for a in articles)
    vocab = build_vocab(sentences, min_count=1)
    assert target_count(encode(sentences, vocab)) == target_count(encode(articles, vocab)) == sum(len(r["surface"]) + 1 for r in rows)


def test_article_sentences_follow_position_order():
    rows = [r for r in token_rows() if r["article_id"] == "Kyoto_0"]
    article = build_sequences(list(reversed(rows)), level="word", unit="article")[0]
    expected = [BOS] + [u for r in rows for u in (*r["surface"], EOS)]
    assert article.units == expected


def test_char_level_units():
    row = {"surface": ["京都", "の", "寺"], "theme": "Kyoto"}
    assert build_sequences([row], level="char", unit="sentence")[0].units == [BOS, "京", "都", "の", "寺", EOS]


def test_vocab_min_count_maps_rare_units_to_unk():
    sequences = build_sequences([{"surface": ["a", "a", "b"], "theme": "Kyoto"}], level="word", unit="sentence")
    vocab = build_vocab(sequences, min_count=2)
    assert vocab.itos[:4] == [PAD, UNK, BOS, EOS]
    assert vocab.encode(["a", "b"]) == [vocab.stoi["a"], vocab.unk_index]


# ------------------------------------------------------------------------ model
def test_model_shapes_and_tied_weights_saved_once():
    model = LSTMLanguageModel(
        vocab_size=30, embedding_size=8, hidden_size=8, num_layers=2, dropout=0.1, tie_weights=True, num_theme_slots=5
    )
    logits, (h, c) = model(torch.randint(0, 30, (3, 7)), themes=torch.tensor([0, 1, 4]))
    assert logits.shape == (3, 7, 30) and h.shape == c.shape == (2, 3, 8)
    assert "output_weight" not in dict(model.named_parameters())
    untied = LSTMLanguageModel(vocab_size=30, embedding_size=8, hidden_size=12, tie_weights=False)
    assert untied(torch.zeros(1, 2, dtype=torch.long))[0].shape == (1, 2, 30)
    with pytest.raises(ValueError, match="E108: tie_weights needs embedding_size == hidden_size, got 8 and 12"):
        LSTMLanguageModel(vocab_size=30, embedding_size=8, hidden_size=12, tie_weights=True)


def test_model_directory_round_trip(trained_project):
    loaded = load_generator(trained_project / GENERATOR_DIR)
    assert loaded.level == "word" and loaded.themes == THEMES and loaded.theme_conditioned
    again = load_generator(trained_project / GENERATOR_DIR)
    tokens = torch.tensor([[2, 5, 6, 7]])
    assert torch.equal(loaded.model(tokens)[0], again.model(tokens)[0])
    log = [json.loads(line) for line in (trained_project / GENERATOR_DIR / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and all("dev_perplexity" in r for r in log)


# ------------------------------------------------------------ perplexity by hand
class FixedDistribution(nn.Module):
    """A 'language model' that predicts the same distribution at every position."""

    def __init__(self, probs: list[float]):
        super().__init__()
        self.log_probs = nn.Parameter(torch.log(torch.tensor(probs)), requires_grad=False)
        self.theme_embedding = None

    def forward(self, tokens, *, themes=None, state=None):
        return self.log_probs.expand(tokens.size(0), tokens.size(1), -1), state


def test_perplexity_of_uniform_model_is_vocabulary_size():
    vocab_size = 7
    model = FixedDistribution([1 / vocab_size] * vocab_size)
    encoded = [Encoded([2, 4, 5, 3], 1), Encoded([2, 6, 4, 4, 1, 3], 2)]
    total, count = corpus_nll(model, encoded, pad_index=0)
    assert count == 3 + 5
    assert perplexity(total, count) == pytest.approx(vocab_size, rel=1e-6)


def test_perplexity_of_fixed_distribution_by_hand():
    probs = [0.0, 0.1, 0.0, 0.2, 0.3, 0.4]  # pad and <s> never predicted
    model = FixedDistribution([p if p > 0 else 1e-30 for p in probs])
    encoded = [Encoded([2, 4, 5, 3], 1), Encoded([2, 1, 3], 1)]  # targets 4 5 3 | 1 3
    expected = math.exp(-(math.log(0.3) + math.log(0.4) + math.log(0.2) + math.log(0.1) + math.log(0.2)) / 5)
    assert perplexity(*corpus_nll(model, encoded, pad_index=0)) == pytest.approx(expected, rel=1e-5)


def test_perplexity_ignores_padding_and_batching():
    torch.manual_seed(0)
    model = LSTMLanguageModel(vocab_size=12, embedding_size=6, hidden_size=6, num_theme_slots=5)
    encoded = [Encoded([2] + [random.Random(i).randint(4, 11) for _ in range(i % 7 + 1)] + [3], 1) for i in range(150)]
    together = corpus_nll(model, encoded, pad_index=0)
    one_by_one = [corpus_nll(model, [e], pad_index=0) for e in encoded]
    assert together[1] == sum(c for _, c in one_by_one)
    assert together[0] == pytest.approx(sum(t for t, _ in one_by_one), rel=1e-5)


# -------------------------------------------------------------- n-gram baseline
def toy_sentences():
    return [["a", "b", "c"], ["a", "b", "b"], ["b", "c", UNK], ["c", "a", "b", "c"]]


def test_indexed_kneser_ney_equals_nltk():
    from nltk.lm import KneserNeyInterpolated
    from nltk.util import everygrams

    from pipeline.evaluation.ngram import fit_ngram, pad_sentence

    vocabulary = [UNK, BOS, EOS, "a", "b", "c"]
    ours = fit_ngram(toy_sentences(), vocabulary=vocabulary, order=3, smoothing="kneser_ney", discount=0.75)
    stock = KneserNeyInterpolated(3, discount=0.75, vocabulary=ours.vocab)
    stock.fit([gram for gram in everygrams(pad_sentence(s, order=3), max_len=3) if gram[-1] != BOS] for s in toy_sentences())
    for context in [(BOS, BOS), (BOS, "a"), ("a", "b"), ("b", "c"), ("c", "c"), ("b",), ()]:
        for word in ["a", "b", "c", EOS, UNK]:
            assert ours.unmasked_score(word, context or None) == stock.unmasked_score(word, context or None)


@pytest.mark.parametrize("smoothing", ["kneser_ney", "witten_bell"])
def test_ngram_distributions_sum_to_one(smoothing):
    from pipeline.evaluation.ngram import fit_ngram

    vocabulary = [UNK, BOS, EOS, "a", "b", "c"]
    model = fit_ngram(toy_sentences(), vocabulary=vocabulary, order=3, smoothing=smoothing)
    for context in [(BOS, BOS), (BOS, "a"), ("a", "b"), ("c", "c"), ("b", "a")]:
        # <s> is never predicted, so the mass is over the other units
        assert sum(model.unmasked_score(w, context) for w in vocabulary) == pytest.approx(1.0, abs=1e-9)


def test_kneser_ney_gives_a_vocabulary_word_the_text_never_has_some_probability():
    """A corpus vocabulary holds words the n-gram text never has: nltk's unigram gives them 0 (infinite
    perplexity); ours interpolates with a uniform distribution, and every distribution still sums to 1."""
    from pipeline.evaluation.ngram import fit_ngram, ngram_nll

    vocabulary = [UNK, BOS, EOS, "a", "b", "c", "z", "y"]  # z and y never occur in the text
    model = fit_ngram(toy_sentences(), vocabulary=vocabulary, order=3, smoothing="kneser_ney", discount=0.75)
    assert model.unmasked_score("z", None) > 0 and model.unmasked_score("z", ("a", "b")) > 0
    predicted = [word for word in vocabulary if word != BOS]
    for context in [(BOS, BOS), (BOS, "a"), ("a", "b"), ("c", "c"), ("b", "a"), ("z", "y")]:
        assert sum(model.unmasked_score(w, context) for w in predicted) == pytest.approx(1.0, abs=1e-9)
    total, count, zeros = ngram_nll(model, [["a", "z", "b"]], order=3)
    assert zeros == 0 and count == 4 and math.isfinite(total)


def test_ngram_perplexity_by_hand_unigram():
    from pipeline.evaluation.ngram import fit_ngram, ngram_nll

    # Witten-Bell of order 1 is the maximum-likelihood unigram: counts over units and </s>
    sentences = [["a", "b"], ["a"]]  # a:2 b:1 </s>:2, N = 5
    model = fit_ngram(sentences, vocabulary=[UNK, BOS, EOS, "a", "b"], order=1, smoothing="witten_bell")
    total, count, zeros = ngram_nll(model, [["a", "b", "a"]], order=1)  # targets a b a </s>
    assert (count, zeros) == (4, 0)
    expected = math.exp(-(2 * math.log(2 / 5) + math.log(1 / 5) + math.log(2 / 5)) / 4)
    assert math.exp(total / count) == pytest.approx(expected)


def test_evaluate_stage_writes_comparable_report(trained_project):
    metrics = run_stage(trained_project, "evaluate_generator", ["evaluate_generator.num_samples=2"])
    report = json.loads((trained_project / GENERATOR_REPORT).read_text(encoding="utf-8"))
    assert report["lstm"]["targets"] == report["ngram"]["targets"] == report["test"]["targets"]
    assert report["test"]["oov_units"] == 4  # the four 未知語 of the test articles
    assert report["ngram"]["order"] == 3 and report["ngram"]["smoothing"] == "kneser_ney"
    assert report["lstm"]["perplexity"] > 1 and report["ngram"]["perplexity"] > 1
    assert [s["theme"] for s in report["samples"]] == THEMES[:2]
    assert metrics["lstm_perplexity"] == report["lstm"]["perplexity"]


# ------------------------------------------------------------------------ resume
def test_resume_continues_exactly_where_training_stopped(tmp_path):
    torch.set_num_threads(1)
    straight = make_project(tmp_path / "straight")
    run_stage(straight, "train_generator", [*TINY, "train_generator.epochs=3"])
    interrupted = make_project(tmp_path / "interrupted")
    run_stage(interrupted, "train_generator", [*TINY, "train_generator.epochs=1"], tag="first")
    metrics = run_stage(interrupted, "train_generator", [*TINY, "train_generator.epochs=3"], resume=True, tag="second")
    assert metrics["epochs_run"] == 3
    a = load_generator(straight / GENERATOR_DIR).model.state_dict()
    b = load_generator(interrupted / GENERATOR_DIR).model.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    log = (interrupted / GENERATOR_DIR / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3]


def test_resume_ignores_a_checkpoint_of_other_settings(tmp_path, caplog):
    project = make_project(tmp_path)
    run_stage(project, "train_generator", [*TINY, "train_generator.epochs=1"], tag="first")
    with caplog.at_level("WARNING"):
        metrics = run_stage(
            project, "train_generator", [*TINY, "train_generator.epochs=1", "train_generator.dropout=0.1"], resume=True, tag="second"
        )
    assert "starting from scratch" in caplog.text
    assert metrics["epochs_run"] == 1


# -------------------------------------------------------------------- generation
def test_detokenize_joins_japanese_without_spaces():
    assert detokenize(["京都", "の", "お寺", "は", "綺麗", "。"]) == "京都のお寺は綺麗。"
    assert detokenize(["Windows", "Vista", "の", "iPhone", "3", "G"]) == "Windows Vistaのiphone3G".replace("iphone", "iPhone")
    assert detokenize([]) == ""


class EndAfter(nn.Module):
    """Predicts token 5 until the sequence has `length` tokens, then </s> (index 3)."""

    def __init__(self, length):
        super().__init__()
        self.length = length
        self.dummy = nn.Parameter(torch.zeros(1))
        self.theme_embedding = None

    def forward(self, tokens, *, themes=None, state=None):
        seen = (0 if state is None else state) + tokens.size(1)
        logits = torch.full((tokens.size(0), tokens.size(1), 8), -10.0)
        logits[:, :, 3 if seen >= self.length else 5] = 10.0
        return logits, seen


def test_generation_stops_at_sentence_end_or_max_tokens():
    results = generate_ids(EndAfter(4), prefix=[2], num=2, max_tokens=10, eos_index=3, banned=[0, 2], temperature=0.5)
    assert results == [([5, 5, 5], True), ([5, 5, 5], True)]
    results = generate_ids(EndAfter(100), prefix=[2, 5], num=1, max_tokens=4, eos_index=3, banned=[0, 2])
    assert results == [([5, 5, 5, 5], False)]


def test_same_seed_same_text(trained_project):
    generator = Generator.from_dir(trained_project / GENERATOR_DIR)
    kwargs = dict(prompt="", num=3, max_tokens=12, temperature=1.0, top_k=0, top_p=1.0, theme="Kyoto")
    first = generator.generate(seed=5, **kwargs).samples
    assert generator.generate(seed=5, **kwargs).samples == first
    assert any(generator.generate(seed=s, **kwargs).samples != first for s in range(6, 10))
    assert all(" " not in text and "<unk>" not in text and "<s>" not in text for text in first)


def test_theme_names_and_errors():
    assert resolve_theme("グルメ", available=THEMES) == "Gourmet"
    assert resolve_theme("kyoto", available=THEMES) == "Kyoto"
    assert resolve_theme(None, available=[]) is None
    with pytest.raises(PipelineError) as error:
        resolve_theme("Food", available=THEMES)
    assert "京都観光" in error.value.hint and "Gourmet" in error.value.hint
    with pytest.raises(PipelineError, match="trained without theme conditioning"):
        resolve_theme("Kyoto", available=[])


# --------------------------------------------------------------------------- CLI
def test_cli_generate_json_is_reproducible(trained_project):
    from typer.testing import CliRunner

    from pipeline.cli import app

    args = ["--dir", str(trained_project), "generate", "--num", "2", "--max-tokens", "10", "--seed", "1", "--theme", "スポーツ", "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert len(data["samples"]) == 2 and data["seed"] == 1 and data["theme"] == "Sports"
    assert CliRunner().invoke(app, args).stdout == first.stdout


@pytest.mark.parametrize(
    "options, message",
    [
        (["--temperature", "-1"], "E109: temperature must be 0 or more"),
        (["--top-p", "0"], "E109: top_p must be in (0, 1]"),
        (["--top-p", "1.5"], "E109: top_p must be in (0, 1]"),
        (["--theme", "Food"], "Unknown theme 'Food'"),
    ],
)
def test_cli_rejects_bad_options(trained_project, options, message):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(trained_project), "generate", *options])
    assert result.exit_code != 0
    assert isinstance(result.exception, PipelineError) or message in result.output
    text = str(result.exception) if isinstance(result.exception, PipelineError) else result.output
    assert message in text
    if "theme" in message:
        assert "グルメ" in text


def test_cli_temperature_zero_is_greedy(trained_project):
    """Temperature 0 is greedy decoding (argmax at every step), so every seed gives the same text."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    outputs = [
        CliRunner().invoke(app, ["--dir", str(trained_project), "generate", "--temperature", "0", "--seed", seed, "--json"])
        for seed in ("1", "2")
    ]
    assert all(result.exit_code == 0 for result in outputs), [result.output for result in outputs]
    assert json.loads(outputs[0].stdout)["samples"] == json.loads(outputs[1].stdout)["samples"]


def test_cli_without_model_says_how_to_train(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(tmp_path), "generate"])
    assert result.exit_code != 0
    assert "jpipe run train_generator" in str(result.exception)


# ------------------------------------------------------------------ scoring (jpipe score)
def test_score_matches_corpus_nll_and_counts_oov(trained_project):
    generator = Generator.from_dir(trained_project / GENERATOR_DIR)
    texts = ["京都の寺は綺麗だ。", "", "ラーメンの味はエスプレッソ。"]
    result = generator.score(texts)
    vocab = generator.loaded.vocab
    assert [line.text for line in result.lines] == texts
    # each scored line equals corpus_nll of the same framed sequence, scored alone
    for line, text in zip(result.lines, texts, strict=True):
        units = generator.prompt_units(text)
        if not units:
            assert line.perplexity is None and line.reason == "empty line"
            continue
        alone = corpus_nll(generator.loaded.model, [Encoded(vocab.encode([BOS, *units, EOS]), 0)], pad_index=vocab.pad_index)
        assert (line.nll, line.targets) == (pytest.approx(alone[0], rel=1e-6), alone[1])
        assert line.targets == len(units) + 1  # every unit and </s>
        assert line.oov == sum(unit not in vocab.stoi for unit in units)
    assert result.lines[0].oov == 0 and result.lines[2].oov >= 1  # エスプレッソ is unseen
    scored = [line for line in result.lines if line.nll is not None]
    assert result.perplexity == pytest.approx(perplexity(sum(line.nll for line in scored), result.targets))
    assert result.oov_rate == pytest.approx(sum(line.oov for line in scored) / sum(line.units for line in scored))


def test_score_with_theme_uses_the_theme_slot(trained_project):
    generator = Generator.from_dir(trained_project / GENERATOR_DIR)
    text = ["京都の寺は紅葉が綺麗だ。"]
    assert generator.score(text, theme="Kyoto").perplexity != generator.score(text).perplexity
    with pytest.raises(PipelineError, match="Unknown theme"):
        generator.score(text, theme="Food")


def test_cli_score_takes_a_text_and_row_ids(trained_project, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipeline.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    one = runner.invoke(app, ["--dir", str(trained_project), "score", "京都の寺は綺麗だ。", "--json"])
    assert one.exit_code == 0, one.output
    data = json.loads(one.stdout)
    expected = Generator.from_dir(trained_project / GENERATOR_DIR).score(["京都の寺は綺麗だ。"]).perplexity
    assert data["lines"] == 1 and data["per_line"][0]["id"] == "1" and data["perplexity"] == pytest.approx(expected, abs=1e-4)
    path = tmp_path / "texts.jsonl"
    path.write_text('{"no": "k1", "body": "京都の寺は綺麗だ。"}\n{"no": "k2", "body": ""}\n', encoding="utf-8")
    rows = runner.invoke(app, ["--dir", str(trained_project), "score", str(path), "--text-field", "body", "--id-column", "no", "--json"])
    assert rows.exit_code == 0, rows.output
    per_line = json.loads(rows.stdout)["per_line"]
    assert [line["id"] for line in per_line] == ["k1", "k2"] and per_line[0]["perplexity"] == pytest.approx(expected, abs=1e-4)
    assert per_line[1]["perplexity"] is None and "empty" in per_line[1]["reason"]


def test_cli_score_json_and_table(trained_project, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    path = tmp_path / "texts.txt"
    path.write_text("京都の寺は綺麗だ。\n\n野球の試合は強い。\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["--dir", str(trained_project), "score", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["lines"] == 3 and data["scored_lines"] == 2
    assert data["per_line"][1]["perplexity"] is None and data["per_line"][1]["reason"]
    expected = Generator.from_dir(trained_project / GENERATOR_DIR).score(["京都の寺は綺麗だ。", "野球の試合は強い。"]).perplexity
    assert data["perplexity"] == pytest.approx(expected, abs=1e-4)
    table = runner.invoke(app, ["--dir", str(trained_project), "score", str(path)])
    assert table.exit_code == 0 and "overall perplexity" in table.output and "京都の寺は綺麗だ。" in table.output
