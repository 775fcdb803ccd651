"""The generator on the real KNBC: trains, beats the n-gram baseline, generates reproducibly.

Runs `jpipe run evaluate_generator` (which trains the generator first) on a
copy of the lead's `real_project`, with the default config: the defaults are
sized to train in a few minutes on two CPU cores. CI_PROFILE pins the
device so a CI machine with a GPU does not change what is measured, and one seed.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

# One seed: the figures compared here are seed 13's (several seeds: tests/unit/test_generator_seeds.py).
CI_PROFILE = ["train_generator.device=cpu", "train_generator.seeds=1"]


@pytest.fixture(scope="module")
def generator_project(real_project, tmp_path_factory):
    import torch

    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner

    torch.set_num_threads(2)
    project = tmp_path_factory.mktemp("generator") / "proj"
    shutil.copytree(real_project, project)
    Runner(project, load_config(project, CI_PROFILE)).run("evaluate_generator")
    return project


@pytest.mark.integration
def test_lstm_beats_ngram_baseline_on_test_split(generator_project):
    from pipeline.paths import GENERATOR_REPORT

    report = json.loads((generator_project / GENERATOR_REPORT).read_text(encoding="utf-8"))
    lstm, ngram = report["lstm"]["perplexity"], report["ngram"]["perplexity"]
    print(
        f"\ntest perplexity: LSTM {lstm}, {ngram and report['ngram']['order']}-gram {report['ngram']['smoothing']} {ngram}, "
        f"ratio {report['lstm_to_ngram_ratio']}, n-gram scoring {report['ngram']['score_seconds']}s"
    )
    assert report["lstm"]["targets"] == report["ngram"]["targets"] > 5000
    assert ngram is not None and lstm < ngram  # the floor
    assert len(report["samples"]) == 5 and all(
        s["text"] and s["theme"] and isinstance(s["seed"], int) for s in report["samples"]
    )  # evaluate_generator.num_samples


@pytest.mark.integration
def test_cli_generate_same_seed_same_text(generator_project):
    from typer.testing import CliRunner

    from pipeline.cli import app

    args = [
        "--dir",
        str(generator_project),
        "generate",
        "--prompt",
        "京都の",
        "--num",
        "3",
        "--max-tokens",
        "40",
        "--temperature",
        "0.8",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--seed",
        "1",
        "--json",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    samples = json.loads(first.stdout)["samples"]
    assert len(samples) == 3
    assert all(text.startswith("京都の") and len(text) > len("京都の") for text in samples)
    assert CliRunner().invoke(app, args).stdout == first.stdout
    themed = CliRunner().invoke(app, [*args, "--theme", "グルメ"])
    assert themed.exit_code == 0, themed.output
    assert json.loads(themed.stdout)["theme"] == "Gourmet"


@pytest.mark.integration
def test_score_reproduces_the_test_perplexity_and_ranks_fluency(generator_project):
    """`Generator.score` on the raw test sentences (re-tokenized from text) gives the perplexity that the
    training code computes from the stored tokens, framed as single sentences with the "any theme" slot,
    and scores the report's targets; a sentence scores better than its own tokens in reverse order."""
    from pipeline.inference.generator import Generator
    from pipeline.paths import GENERATOR_DIR, GENERATOR_REPORT, TOKENS
    from pipeline.text.tokenize import read_token_rows
    from pipeline.training.language_model import build_sequences, corpus_nll, encode

    report = json.loads((generator_project / GENERATOR_REPORT).read_text(encoding="utf-8"))
    rows = [row for row in read_token_rows(generator_project / TOKENS) if row["split"] == "test"]
    generator = Generator.from_dir(generator_project / GENERATOR_DIR)
    loaded = generator.loaded
    result = generator.score([row["text"] for row in rows])
    sentences = encode(build_sequences(rows, level=loaded.level, unit="sentence"), loaded.vocab)
    nll, targets = corpus_nll(loaded.model, sentences, pad_index=loaded.vocab.pad_index, device=loaded.device)
    print(
        f"\nscore: {result.perplexity:.3f} over {result.targets} targets (training code {math.exp(nll / targets):.3f}; "
        f"report, {report['lstm']['sequence_unit']} unit, {report['lstm']['perplexity']}), OOV {result.oov_rate:.1%}"
    )
    assert result.targets == targets == report["lstm"]["targets"]  # both units score the same targets
    assert result.perplexity == pytest.approx(math.exp(nll / targets), rel=1e-3)
    long_rows = [row for row in rows if len(row["surface"]) >= 8][:50]
    forward = generator.score(["".join(row["surface"]) for row in long_rows]).lines
    backward = generator.score(["".join(reversed(row["surface"])) for row in long_rows]).lines
    better = sum(f.perplexity < b.perplexity for f, b in zip(forward, backward, strict=True))
    assert better >= 0.9 * len(long_rows)
