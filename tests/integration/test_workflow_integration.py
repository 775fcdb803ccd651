"""Integration: early cutoff on the real KNBC tokens and the real stage table.

Only tokenize (and what is upstream of it) really runs. The vector and training stages keep
their real declarations (inputs, outputs, config sections) but a stand-in function that
writes the sha256 of every input it reads: staleness depends on what a stage reads and
writes, not on how it trains, and the test stays fast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import load_config
from pipeline.paths import EXTRA_TOKENS, TOKENS
from pipeline.text.token_store import TokenStore
from pipeline.workflow.runner import Runner
from pipeline.workflow.stages import STAGES

pytestmark = pytest.mark.integration

STAND_INS = ("spacy_vectors", "train_topic", "train_sentiment", "train_generator")
MODEL_STAGES = ("train_topic", "train_sentiment", "train_generator")
CALLS: list[str] = []


def stand_in_stage(ctx):
    """Writes each declared output directory with the sha256 of every input the stage reads."""
    CALLS.append(ctx.stage.name)
    digests = {}
    for path in ctx.stage.input_paths(ctx.config):
        source = ctx.input(path)
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        digests[path] = hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()
    for output in ctx.stage.outputs:
        directory = ctx.output(output)
        directory.mkdir(parents=True)
        (directory / "inputs.json").write_text(json.dumps(digests, sort_keys=True), encoding="utf-8")


def stages_with_stand_ins():
    here = f"{__name__}:stand_in_stage"
    return [dataclasses.replace(stage, func=here) if stage.name in STAND_INS else stage for stage in STAGES]


@pytest.fixture()
def project(real_project, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the tokenized real project where the stand-ins recorded the model stages in the lock."""
    project = tmp_path / "project"
    shutil.copytree(real_project, project)  # copy2 keeps mtimes: the lock's stat cache stays valid
    base: list[str] = []  # corpus.source is not fingerprinted: the copied lock stays valid without it
    CALLS.clear()
    for stage in MODEL_STAGES:
        Runner(project, load_config(project, base), stages=stages_with_stand_ins()).run(stage)
    assert CALLS == ["spacy_vectors", "train_topic", "train_sentiment", "train_generator"]
    CALLS.clear()
    return project, base


def states(project: Path, overrides: list[str]) -> dict[str, tuple[str, list[str], list[str]]]:
    runner = Runner(project, load_config(project, overrides), stages=stages_with_stand_ins())
    return {s.name: ("fresh" if s.fresh else "stale", s.reasons, s.notes) for s in runner.status()}


def test_extra_corpora_leave_the_classifiers_fresh(project, tmp_path):
    project, base = project
    extra = tmp_path / "extra.txt"
    extra.write_text("京都の寺を見た。\n携帯の電池がすぐ切れる。\n", encoding="utf-8")
    overrides = [*base, f'tokenize.extra_corpora=["{extra}"]']
    knbc_before = (project / TOKENS).read_bytes()

    before = states(project, overrides)
    assert before["tokenize"] == ("stale", ["config tokenize.extra_corpora changed", f"input {extra} added"], [])
    for name in MODEL_STAGES:
        assert before[name][0] == "stale" and "upstream tokenize is stale" in before[name][1]

    assert Runner(project, load_config(project, overrides), stages=stages_with_stand_ins()).run("tokenize") == ["tokenize"]
    assert (project / TOKENS).read_bytes() == knbc_before  # the premise: KNBC's tokens do not depend on extra corpora
    assert TokenStore.open(project / EXTRA_TOKENS).sentences == 2

    after = states(project, overrides)
    note = f"upstream tokenize reran, its output {TOKENS} is unchanged"
    for name in (*MODEL_STAGES, "spacy_vectors"):
        assert after[name] == ("fresh", [], [note]), name
    # a full run rebuilds what reads the extra tokens (word2vec...) but no model stage
    ran = Runner(project, load_config(project, overrides), stages=stages_with_stand_ins()).plan()
    assert not {name for name, _ in ran} & set(MODEL_STAGES)

    from pipeline.cli import app

    sets = [arg for override in overrides for arg in ("--set", override)]
    result = CliRunner().invoke(app, ["--dir", str(project), "status", "--json", *sets])
    assert result.exit_code == 0, result.output
    cli = {stage["name"]: stage for stage in json.loads(result.stdout)["stages"]}
    assert cli["train_topic"]["state"] == "fresh" and cli["train_topic"]["notes"] == [note]


def test_a_real_change_in_the_tokens_makes_the_classifiers_stale(project):
    project, base = project
    overrides = [*base, "tokenize.split_mode=B"]
    knbc_before = (project / TOKENS).read_bytes()
    assert Runner(project, load_config(project, overrides), stages=stages_with_stand_ins()).run("tokenize") == ["tokenize"]
    assert (project / TOKENS).read_bytes() != knbc_before

    after = states(project, overrides)
    assert after["spacy_vectors"] == ("stale", [f"input {TOKENS} changed"], [])
    assert after["train_generator"] == ("stale", [f"input {TOKENS} changed"], [])
    for name in ("train_topic", "train_sentiment"):
        assert after[name] == ("stale", ["upstream spacy_vectors is stale", f"input {TOKENS} changed"], []), name

    runner = Runner(project, load_config(project, overrides), stages=stages_with_stand_ins())
    assert runner.run("train_topic") == ["spacy_vectors", "train_topic"]
    assert states(project, overrides)["train_topic"] == ("fresh", [], [])
