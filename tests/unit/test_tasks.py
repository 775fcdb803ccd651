"""Tasks as data: [tasks.NAME] config, labelled-file validation (one test per bad input), the per-task
stages and their staleness, and a user task trained on a hand-written fixture file end to end."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.data.tasks import add_task, load_task_rows, remove_task, split_by_group
from pipeline.errors import ConfigError, InputError
from pipeline.workflow.stages import build_stages
from tests.conftest import FAST_SETTINGS, write_tiny_project

# A hand-written review file: the label is told by one word, the group is the "shop".
POSITIVE = ["美味しい", "最高", "好き", "嬉しい", "素晴らしい"]
NEGATIVE = ["不味い", "最悪", "嫌い", "残念", "ひどい"]
FILLER = ["ラーメン", "店", "スープ", "麺", "今日", "また", "行く"]


def review_rows(count: int = 60) -> list[dict[str, str]]:
    rows = []
    for i in range(count):
        positive = i % 2 == 0
        word = (POSITIVE if positive else NEGATIVE)[i % 5]
        rows.append({"id": f"r{i}", "shop": f"s{i // 3}", "body": f"{FILLER[i % 7]}は{word}です。", "stars": "pos" if positive else "neg"})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], *, delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def add(project: Path, name: str = "reviews", **values):
    return add_task(project, name=name, values={"data": "reviews.csv", "text_column": "body", "label_column": "stars", **values})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "jpipe.toml").write_text('[tokenize]\nsplit_mode = "C"\n', encoding="utf-8")
    write_csv(project / "reviews.csv", review_rows())
    return project


def config_unchanged(project: Path) -> bool:
    return (project / "jpipe.toml").read_text(encoding="utf-8") == '[tokenize]\nsplit_mode = "C"\n'


# ------------------------------------------------------------------ config
def test_builtin_tasks_and_a_task_from_the_file(project):
    add(project, group_column="shop")
    config = load_config(project)
    assert config.task_names == ["topic", "sentiment", "reviews"]
    reviews = config.task("reviews")
    assert (reviews.data, reviews.text_column, reviews.label_column, reviews.group_column) == ("reviews.csv", "body", "stars", "shop")
    assert config.task("topic").is_knbc and config.task("topic").labels == ["Gourmet", "Keitai", "Kyoto", "Sports"]
    names = [stage.name for stage in build_stages(config)]
    assert names.index("prepare_reviews") < names.index("train_topic") < names.index("train_reviews") < names.index("evaluate_reviews")
    assert "prepare_topic" not in names  # a corpus task reads the corpus tokens


def test_task_classifier_overrides_and_class_weights(project):
    (project / "jpipe.toml").write_text(
        '[classifier]\nhidden_size = 64\n\n[tasks.reviews]\ndata = "reviews.csv"\nclass_weights = true\nclassifier = { dropout = 0.5 }\n',
        encoding="utf-8",
    )
    config = load_config(project, ["tasks.reviews.classifier.epochs=3"])
    clf = config.classifier_for("reviews")
    assert (clf["hidden_size"], clf["dropout"], clf["epochs"], clf["class_weights"]) == (64, 0.5, 3, True)
    assert config.classifier_for("topic")["dropout"] == 0.3 and config.classifier_for("topic")["hidden_size"] == 64


@pytest.mark.parametrize(
    ("toml", "code"),
    [
        ('[tasks.reviews]\ndata = "r.csv"\nclassifier = { hiden_size = 3 }\n', "E102"),
        ('[tasks.reviews]\ntext_column = "body"\n', "E135"),
        ('[tasks.Reviews]\ndata = "r.csv"\n', "E130"),
        ('[tasks.generator]\ndata = "r.csv"\n', "E130"),
        ('[tasks.reviews]\ndata = "r.csv"\ntrain_ratio = 0.9\n', "E108"),
        ("[train_topic]\nepochs = 3\n", "E133"),
    ],
)
def test_bad_task_sections_are_config_errors(tmp_path, toml, code):
    (tmp_path / "jpipe.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.code == code


# ------------------------------------------------------------------ bad input: one test each
def test_missing_file(project):
    with pytest.raises(InputError) as info:
        add(project, data="nope.csv")
    assert info.value.code == "E250" and "nope.csv" in str(info.value) and "tasks.reviews.data" in str(info.value)
    assert config_unchanged(project)


def test_empty_file(project):
    (project / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(InputError) as info:
        add(project, data="empty.csv")
    assert info.value.code == "E251" and "empty.csv" in str(info.value)
    assert config_unchanged(project)


def test_missing_column_lists_the_columns_found(project):
    with pytest.raises(InputError) as info:
        add(project, label_column="rating")
    assert info.value.code == "E235" and "'rating'" in str(info.value)
    assert "'id', 'shop', 'body', 'stars'" in str(info.value)
    assert config_unchanged(project)


def test_missing_jsonl_field_lists_the_fields_found(project):
    with gzip.open(project / "r.jsonl.gz", "wt", encoding="utf-8") as handle:
        for row in review_rows():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    with pytest.raises(InputError) as info:
        add(project, data="r.jsonl.gz", text_column="text")
    assert info.value.code == "E235" and "'body'" in str(info.value)
    assert add(project, data="r.jsonl.gz").labels == ["neg", "pos"]  # the right field: fine


def test_only_one_label(project):
    write_csv(project / "one.csv", [{**row, "stars": "pos"} for row in review_rows()])
    with pytest.raises(InputError) as info:
        add(project, data="one.csv")
    assert info.value.code == "E253" and "'pos'" in str(info.value)
    assert config_unchanged(project)


def test_rare_label_is_an_error_unless_allowed(project, caplog):
    rows = review_rows() + [{"id": "x1", "shop": "sx", "body": "普通です。", "stars": "meh"}] * 3
    write_csv(project / "rare.csv", rows)
    with pytest.raises(InputError) as info:
        add(project, data="rare.csv")
    assert info.value.code == "E254" and "'meh' (3)" in str(info.value) and "allow_rare" in str(info.value)
    assert config_unchanged(project)
    with caplog.at_level(logging.WARNING):
        data = add(project, data="rare.csv", allow_rare=True)
    assert data.labels == ["meh", "neg", "pos"] and "fewer than 5 examples" in caplog.text
    assert load_config(project).task("reviews").allow_rare is True


def test_text_that_is_not_utf8_names_the_row(project):
    data = (project / "reviews.csv").read_bytes().replace("ラーメンは美味しい".encode(), "ラーメンは美味しい".encode("shift_jis"), 1)
    (project / "sjis.csv").write_bytes(data)
    with pytest.raises(InputError) as info:
        add(project, data="sjis.csv")
    assert info.value.code == "E252" and "sjis.csv row 1" in str(info.value) and "UTF-8" in str(info.value)
    assert config_unchanged(project)


def test_duplicate_task_name(project):
    add(project)
    before = (project / "jpipe.toml").read_text(encoding="utf-8")
    for name in ("reviews", "topic"):
        with pytest.raises(ConfigError) as info:
            add(project, name=name)
        assert info.value.code == "E131"
    assert (project / "jpipe.toml").read_text(encoding="utf-8") == before


def test_label_list_not_matching_the_data(project):
    with pytest.raises(InputError) as info:
        add(project, labels=["pos", "neutral"])
    message = str(info.value)
    assert info.value.code == "E255" and "neg (first on row 2)" in message and "listed labels with no row: neutral" in message
    assert config_unchanged(project)
    assert add(project, labels=["pos", "neg"]).labels == ["pos", "neg"]  # the given order is the output order


def test_rows_with_empty_text_or_label_are_skipped_and_counted(project, caplog):
    rows = review_rows() + [{"id": "e1", "shop": "s", "body": "", "stars": "pos"}, {"id": "e2", "shop": "s", "body": "良い", "stars": " "}]
    write_csv(project / "holes.csv", rows)
    with caplog.at_level(logging.WARNING):
        data = add(project, data="holes.csv")
    assert len(data.rows) == 60 and data.skipped == {"empty text": 1, "empty label": 1}
    assert data.skipped_examples == ["holes.csv row 61: empty text", "holes.csv row 62: empty label"]
    assert "skipped 2 rows" in caplog.text


# ------------------------------------------------------------------ split and registry
def test_split_is_by_group_and_seeded():
    rows = [{**row, "label": row["stars"], "group": row["shop"]} for row in review_rows(90)]
    split_by_group(rows, train_ratio=0.6, dev_ratio=0.2, seed=5)
    sides = {}
    for row in rows:
        sides.setdefault(row["group"], set()).add(row["split"])
    assert all(len(s) == 1 for s in sides.values())
    assert {row["split"] for row in rows} == {"train", "dev", "test"}
    again = [{**row} for row in rows]
    split_by_group(again, train_ratio=0.6, dev_ratio=0.2, seed=5)
    assert [r["split"] for r in again] == [r["split"] for r in rows]


def test_dev_and_test_files(project):
    write_csv(project / "dev.tsv", review_rows(20), delimiter="\t")
    write_csv(project / "test.csv", review_rows(30))
    add(project, dev_data="dev.tsv", test_data="test.csv")
    data = load_task_rows(project, name="reviews", section=load_config(project).task("reviews"))
    counts = {split: sum(n.values()) for split, n in data.distribution().items()}
    assert counts == {"train": 60, "dev": 20, "test": 30}


def test_remove_task(project):
    add(project, group_column="shop")
    remove_task(project, name="reviews")
    assert config_unchanged(project)
    with pytest.raises(ConfigError) as info:
        remove_task(project, name="topic")
    assert info.value.code == "E134"
    with pytest.raises(ConfigError) as info:
        remove_task(project, name="nope")
    assert info.value.code == "E132"


# ------------------------------------------------------------------ stages, staleness, a trained user task
def fast(task: str, *extra: str) -> list[str]:
    return [f"tasks.{task}.classifier.{setting}" for setting in (*FAST_SETTINGS, *extra)]


@pytest.fixture
def task_project(tmp_path: Path) -> Path:
    project = write_tiny_project(tmp_path / "proj")
    write_csv(project / "reviews.csv", review_rows(90))
    add_task(
        project, name="reviews", values={"data": "reviews.csv", "text_column": "body", "label_column": "stars", "group_column": "shop"}
    )
    return project


def test_user_task_trains_evaluates_and_classifies(task_project):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.workflow.runner import Runner

    # random init: the fixture's fake word2vec vectors do not know the review words
    config = load_config(
        task_project, fast("reviews", "embedding_init=random", "embedding_dim=16", "epochs=12", "patience=12") + fast("topic")
    )
    stages = [s for s in build_stages(config) if s.name in ("prepare_reviews", "train_reviews", "evaluate_reviews", "train_topic")]
    runner = Runner(task_project, config, stages=stages)
    assert runner.run() == ["prepare_reviews", "train_topic", "train_reviews", "evaluate_reviews"]
    stats = json.loads((task_project / "data/tasks/reviews/stats.json").read_text())
    assert stats["labels"] == ["neg", "pos"] and stats["rows"] == 90 and stats["skipped"] == {}
    report = json.loads((task_project / "models/report/tasks/reviews/report.json").read_text())
    assert report["bilstm_attention"]["macro_f1"] >= 0.9 and list(report["bilstm_attention"]["per_class"]) == ["neg", "pos"]
    assert set(report["label_distribution"]) == {"train", "dev", "test"}
    assert (task_project / "models/report/tasks/reviews/confusion.png").exists()

    # the review file changes: its stages are stale with the reason, topic stays fresh
    rows = review_rows(90)
    rows[0]["body"] = "ラーメンは最高に美味しい。"
    write_csv(task_project / "reviews.csv", rows)
    status = {s.name: s for s in Runner(task_project, config, stages=stages).status()}
    assert status["prepare_reviews"].reasons == ["input reviews.csv changed"]
    assert status["train_reviews"].reasons == ["upstream prepare_reviews is stale"]
    assert status["train_topic"].fresh

    cli = CliRunner().invoke(app, ["--dir", str(task_project), "classify", "-", "--task", "reviews"], input="スープが最高でした。\n")
    assert cli.exit_code == 0, cli.output
    row = json.loads(cli.stdout.splitlines()[0])
    assert row["reviews"]["label"] == "pos" and set(row["reviews"]["probabilities"]) == {"neg", "pos"} and "topic" not in row


def test_task_cli_add_list_remove(project):
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    base = ["--dir", str(project), "task"]
    added = runner.invoke(
        app, [*base, "add", "reviews", "--data", str(project / "reviews.csv"), "--text-column", "body", "--label-column", "stars"]
    )
    assert added.exit_code == 0, added.output
    assert "added task reviews: 60 rows, labels neg, pos" in added.stdout
    assert 'data = "reviews.csv"' in (project / "jpipe.toml").read_text(encoding="utf-8")  # stored relative to the project
    listed = json.loads(runner.invoke(app, [*base, "list", "--json"]).stdout)
    assert [t["name"] for t in listed["tasks"]] == ["topic", "sentiment", "reviews"] and not listed["tasks"][2]["trained"]
    again = runner.invoke(app, [*base, "add", "reviews", "--data", str(project / "reviews.csv")])
    assert again.exit_code == 1 and "E131" in again.output
    assert runner.invoke(app, [*base, "remove", "reviews"]).exit_code == 0 and config_unchanged(project)


def test_a_disabled_builtin_task_has_no_stages(tmp_path):
    (tmp_path / "jpipe.toml").write_text("[tasks.sentiment]\nenabled = false\n", encoding="utf-8")
    config = load_config(tmp_path)
    names = [stage.name for stage in build_stages(config)]
    assert config.task_names == ["topic"] and "train_topic" in names
    assert not {"train_sentiment", "evaluate_sentiment"} & set(names)
    report = next(stage for stage in build_stages(config) if stage.name == "report")
    assert "models/report/tasks/sentiment" not in report.input_paths(config)
