"""Stage ``report`` on hand-made evaluation files: the merged metrics.json layout and the returned summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import WorkflowError
from pipeline.evaluation.report import report_stage
from pipeline.paths import CLASSIFIERS_REPORT, CLASSIFIERS_TABLE, GENERATOR_REPORT, METRICS, VECTORS_REPORT, task_report_dir
from pipeline.workflow.stage import StageContext
from pipeline.workflow.stages import STAGES
from tests.conftest import run_stage

REPORT_STAGE = next(stage for stage in STAGES if stage.name == "report")


def classifier_result(macro_f1: float, accuracy: float) -> dict:
    return {"accuracy": accuracy, "macro_f1": macro_f1, "per_class": {"A": {"f1": 0.5, "support": 3}}, "test_sentences": 437}


# The evaluation files, shaped as evaluate_<task> / evaluate_generator / evaluate_vectors write them.
# Figures carry more digits than the summary keeps, so the rounding shows.
CLASSIFIERS = {
    "topic": {
        "bilstm_attention": {**classifier_result(0.729449, 0.7574), "best_epoch": 3},
        "tfidf_linear": classifier_result(0.6901, 0.7094),
        "majority": {**classifier_result(0.1418, 0.3959), "label": "Kyoto"},
    },
    "sentiment": {
        "bilstm_attention": {**classifier_result(0.636751, 0.6979), "best_epoch": 10},
        "majority": {**classifier_result(0.2511, 0.6041), "label": "neutral"},
    },
}
GENERATOR = {
    "lstm": {"perplexity": 43.33712, "targets": 7700},
    "ngram": {"perplexity": 50.6249, "order": 3},
    "lstm_to_ngram_ratio": 0.8561,
    "samples": [{"prompt": "京都の", "text": "京都の寺は紅葉が綺麗だ。"}],
}
VECTORS = {"sources": {"word2vec": {"vocab_size": 3217}, "spacy": {"vocab_size": 3001}}, "map": {"path": "models/report/vectors_map.png"}}


def write_inputs(project: Path, *, classifiers: dict = CLASSIFIERS, generator: dict = GENERATOR, vectors: dict = VECTORS) -> None:
    tasks = [(f"{task_report_dir(task)}/report.json", report) for task, report in classifiers.items()]
    for relative, data in (*tasks, (GENERATOR_REPORT, generator), (VECTORS_REPORT, vectors)):
        path = project / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def context(project: Path) -> StageContext:
    """A minimal context: the report stage has no config section and reads only its three inputs."""
    return StageContext(
        stage=REPORT_STAGE,
        project_dir=project,
        config=load_config(project, []),
        staging_dir=project / ".jpipe" / "staging" / "report",
        work_dir=project / ".jpipe" / "work" / "report",
    )


def test_the_stage_table_declares_every_task_report_in_and_metrics_out(tmp_path):
    tasks = {task_report_dir("topic"), task_report_dir("sentiment")}
    assert set(REPORT_STAGE.input_paths(load_config(tmp_path, []))) == {*tasks, GENERATOR_REPORT, VECTORS_REPORT}
    assert REPORT_STAGE.outputs == (METRICS, CLASSIFIERS_REPORT, CLASSIFIERS_TABLE)
    assert REPORT_STAGE.load() is report_stage


def test_report_merges_classifiers_at_top_level_and_summarises(tmp_path):
    write_inputs(tmp_path)
    lock = {
        "format": 2,
        "stages": {"train_topic": {"duration_s": 20.5}, "evaluate_topic": {"duration_s": 1.25}, "report": {"duration_s": 9.0}},
    }
    (tmp_path / "jpipe.lock").write_text(json.dumps(lock), encoding="utf-8")
    ctx = context(tmp_path)
    summary = report_stage(ctx)

    # Written to the staging directory (the runner moves it into place), never straight into the project.
    staged = ctx.staging_dir / METRICS
    assert not (tmp_path / METRICS).exists()
    metrics = json.loads(staged.read_text(encoding="utf-8"))
    assert list(metrics) == ["topic", "sentiment", "generator", "vectors", "stage_times"]
    # every stage's last run from jpipe.lock, the report's own earlier run left out
    assert metrics["stage_times"]["seconds"] == {"train_topic": 20.5, "evaluate_topic": 1.25}
    assert metrics["topic"] == CLASSIFIERS["topic"] and metrics["sentiment"] == CLASSIFIERS["sentiment"]
    assert metrics["generator"] == GENERATOR and metrics["vectors"] == VECTORS
    assert "京都の寺" in staged.read_text(encoding="utf-8")  # Japanese text stays readable, not \u-escaped
    assert summary == {
        "topic_macro_f1": 0.7294,
        "sentiment_macro_f1": 0.6368,
        "lstm_perplexity": 43.34,
        "ngram_perplexity": 50.62,
        "stages_seconds": 21.8,
    }


def test_summary_leaves_out_figures_that_are_missing(tmp_path):
    classifiers = {"topic": CLASSIFIERS["topic"], "sentiment": {"majority": classifier_result(0.25, 0.6)}}
    write_inputs(tmp_path, classifiers=classifiers, generator={"lstm": {"perplexity": 12.3461}})
    summary = report_stage(context(tmp_path))
    assert summary == {"topic_macro_f1": 0.7294, "lstm_perplexity": 12.35, "stages_seconds": 0}  # no jpipe.lock yet
    metrics = json.loads((tmp_path / ".jpipe/staging/report" / METRICS).read_text(encoding="utf-8"))
    assert metrics["sentiment"] == {"majority": classifier_result(0.25, 0.6)} and metrics["generator"] == {"lstm": {"perplexity": 12.3461}}


def test_a_missing_input_names_the_file_and_writes_nothing(tmp_path):
    write_inputs(tmp_path)
    (tmp_path / GENERATOR_REPORT).unlink()
    ctx = context(tmp_path)
    with pytest.raises(WorkflowError, match=re.escape(GENERATOR_REPORT)) as caught:
        report_stage(ctx)
    assert caught.value.code == "E404" and "jpipe run" in caught.value.hint
    assert not (ctx.staging_dir / METRICS).exists()


def test_run_stage_puts_metrics_json_in_place(tmp_path):
    write_inputs(tmp_path)
    summary = run_stage(tmp_path, "report")
    assert summary["topic_macro_f1"] == 0.7294
    assert json.loads((tmp_path / METRICS).read_text(encoding="utf-8"))["vectors"] == VECTORS
    assert not (tmp_path / ".jpipe" / "staging" / "report").exists()


def with_seeds(row: dict, mean: float, std: float, seeds: int = 5) -> dict:
    return {**row, "seeds": seeds, "macro_f1_mean": mean, "macro_f1_std": std, "accuracy_mean": row["accuracy"], "accuracy_std": 0.01}


def test_table_shows_mean_and_std_and_marks_differences_within_noise(tmp_path):
    topic = CLASSIFIERS["topic"]
    classifiers = {
        # BiLSTM 0.7350 ± 0.0100 vs TF-IDF 0.7300 (deterministic): 0.005 apart, within noise
        "topic": {
            "bilstm_attention": with_seeds(topic["bilstm_attention"], 0.7350, 0.0100),
            "tfidf_linear": {**topic["tfidf_linear"], "macro_f1": 0.7300},  # written before seeds existed: one run, std 0
            "majority": topic["majority"],
        },
        # BiLSTM 0.6400 ± 0.0050 vs majority 0.2511: far apart
        "sentiment": {
            "bilstm_attention": with_seeds(CLASSIFIERS["sentiment"]["bilstm_attention"], 0.6400, 0.0050),
            "majority": CLASSIFIERS["sentiment"]["majority"],
        },
    }
    write_inputs(tmp_path, classifiers=classifiers)
    summary = run_stage(tmp_path, "report")
    assert summary["topic_macro_f1_mean"] == 0.7350 and summary["topic_macro_f1_std"] == 0.0100
    assert summary["topic_macro_f1"] == 0.7294  # the kept model's own figure stays under its key
    table = (tmp_path / CLASSIFIERS_TABLE).read_text(encoding="utf-8")
    assert "| bilstm_attention | 5 | 0.7350 ± 0.0100 | 0.7294 |" in table
    assert "| tfidf_linear | 1 | 0.7300 ± 0.0000 | 0.7300 |" in table
    assert "- bilstm_attention vs tfidf_linear: +0.0050 (spread 0.0100): within noise" in table
    assert "- bilstm_attention vs majority: +0.5932 (spread 0.0100): above by more than the spread" in table
    assert "- bilstm_attention vs majority: +0.3889 (spread 0.0050): above by more than the spread" in table
    assert "- tfidf_linear vs majority: +0.5882 (spread 0.0000): above by more than the spread" in table
