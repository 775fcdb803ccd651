"""The seq2seq opinion extractor on the real KNBC (default config, two seeds): the issue's goals, measured.

Runs train_extractor and evaluate_extractor in a copy of the session's tokenized project:
about 5-8 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil

import pytest

# slow: two seeds of the extractor on the real corpus (about 8 minutes); `make test-slow` / `make test-all` run it
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def evaluated(real_project, tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner

    project = tmp_path_factory.mktemp("extractor") / "proj"
    shutil.copytree(real_project, project)
    config = load_config(project, ["train_extractor.device=cpu", "evaluate_extractor.device=cpu", "train_extractor.seeds=2"])
    ran = Runner(project, config).run("evaluate_extractor")
    assert {"train_extractor", "evaluate_extractor"} <= set(ran)
    return project


def test_seq2seq_beats_the_last_predicate_baseline(evaluated):
    report = json.loads((evaluated / "models/report/extractor.json").read_text(encoding="utf-8"))
    assert report["test_sentences"] == 437
    seq2seq, baseline_a = report["seq2seq"], report["baseline_a"]
    assert seq2seq["record_f1"] > baseline_a["record_f1"]
    assert seq2seq["expression_tokens_f1"] > 0.3
    assert 0.0 < seq2seq["no_opinion_precision"] <= 1.0
    assert seq2seq["seeds"] == 2 and [run["seed"] for run in seq2seq["per_seed"]] == [13, 14]
    assert (evaluated / "models/report/extractor.md").read_text(encoding="utf-8").count(" ± ") >= 4 * 8


def test_extract_real_sentences(evaluated):
    from pipeline.inference.extractor import Extractor

    extractor = Extractor.from_dir(evaluated / "models/extractor")
    text = "駅前のラーメン屋はスープが濃厚で美味しかった。"
    records = extractor.extract_one(text, beam=5)
    assert records, "a clearly evaluative sentence gave no record"
    for record in records:
        if record["expression_span"]:
            start, end = record["expression_span"]
            assert text[start:end] == record["expression"]
