import dataclasses

import pytest

from pipeline.config import SCHEMA, SECTIONS, ClassifierSection, default_toml, load_config, parse_override
from pipeline.config.schema import GeneratorSection, PrepareSection, TokenizeSection
from pipeline.errors import ConfigError


def test_defaults_cover_every_section(tmp_path):
    config = load_config(tmp_path)
    assert set(config.sections) == set(SCHEMA) == set(SECTIONS)
    assert config["tokenize"]["split_mode"] == "C"
    assert config["tokenize"].split_mode == "C"


def test_sections_are_frozen_typed_mappings(tmp_path):
    section = load_config(tmp_path)["tokenize"]
    assert isinstance(section, TokenizeSection)
    assert dict(section) == {
        "split_mode": "C",
        "extra_corpora": [],
        "batch_size": 256,
        "text_field": "text",
        "store_fields": ["surface", "norm"],
        "shard_lines": 20000,
        "workers": 0,
        "engine": "local",
    }
    assert {**section} == dict(section) and section == dict(section)
    assert list(section.items())[0] == ("split_mode", "C") and section.get("nope", 7) == 7 and len(section) == 8
    with pytest.raises(KeyError):
        section["nope"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        section.split_mode = "A"


def test_task_classifiers_are_the_base_section_with_task_overrides(tmp_path):
    config = load_config(tmp_path)
    topic, sentiment = config.classifier_for("topic"), config.classifier_for("sentiment")
    assert isinstance(topic, ClassifierSection) and isinstance(sentiment, ClassifierSection)
    assert list(topic) == list(sentiment) == list(config["classifier"])  # same keys, same order
    assert (topic["word_dropout"], sentiment["word_dropout"]) == (0.2, 0.0)
    assert (topic["class_weights"], sentiment["class_weights"]) == (False, True)
    assert SCHEMA["classifier"]["word_dropout"].max == 0.9
    assert config.task_names == ["topic", "sentiment"]


def test_schema_is_derived_from_the_dataclasses():
    split_mode = SCHEMA["tokenize"]["split_mode"]
    assert (split_mode.default, split_mode.type, split_mode.choices) == ("C", str, ("A", "B", "C"))
    assert SCHEMA["tokenize"]["extra_corpora"].item_type is str
    assert SCHEMA["classifier"]["learning_rate"].type is float
    assert SCHEMA["corpus"]["source"].fingerprint is False


def test_sections_validate_when_built_directly():
    assert PrepareSection(train_ratio=1, dev_ratio=0, test_ratio=0).train_ratio == 1.0  # widened to float
    with pytest.raises(ConfigError, match="E104"):
        TokenizeSection(split_mode="Z")
    with pytest.raises(ConfigError, match="E108"):
        GeneratorSection(embedding_size=128)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tokenize.split_mode=A", ("tokenize", "split_mode", "A")),
        ("word2vec.vector_size=64", ("word2vec", "vector_size", 64)),
        ("classifier.freeze_embeddings=true", ("classifier", "freeze_embeddings", True)),
        ('tokenize.extra_corpora=["a.txt", "b.txt"]', ("tokenize", "extra_corpora", ["a.txt", "b.txt"])),
        ("corpus.source=/tmp/knbc.tar.bz2", ("corpus", "source", "/tmp/knbc.tar.bz2")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="E106") as info:
        load_config(tmp_path, ["tokenize"])
    assert info.value.hint == "Write section.key=value, for example tokenize.split_mode=A."


def test_override_applies_and_widens_int_to_float(tmp_path):
    config = load_config(tmp_path, ["tasks.topic.classifier.learning_rate=1", "tokenize.split_mode=B"])
    lr = config.classifier_for("topic")["learning_rate"]
    assert lr == 1.0 and isinstance(lr, float) and config.classifier_for("sentiment")["learning_rate"] == 2e-3
    assert config["tokenize"]["split_mode"] == "B"
    assert config.overrides == {"tasks.topic.classifier.learning_rate": 1, "tokenize.split_mode": "B"}


def test_with_values_gives_a_new_validated_config(tmp_path):
    config = load_config(tmp_path)
    changed = config.with_values({"corpus.source": "/data/knbc.tar.bz2"})
    assert changed["corpus"]["source"] == "/data/knbc.tar.bz2" and changed.overrides == {"corpus.source": "/data/knbc.tar.bz2"}
    assert config["corpus"]["source"].startswith("https://")  # the original is untouched
    assert changed["tokenize"] is config["tokenize"]
    with pytest.raises(ConfigError, match="E103"):
        config.with_values({"corpus.expected_articles": "many"})


def test_unknown_key_names_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match="E102") as info:
        load_config(tmp_path, ["tokenize.split_mod=A"])
    assert info.value.message == "Unknown config key 'tokenize.split_mod'. Did you mean 'split_mode'?"
    assert (
        info.value.hint
        == "Valid keys in [tokenize]: split_mode, extra_corpora, batch_size, text_field, store_fields, shard_lines, workers, engine."
    )


def test_unknown_section_names_valid_sections(tmp_path):
    with pytest.raises(ConfigError, match="E101") as info:
        load_config(tmp_path, ["tokenise.split_mode=A"])
    assert info.value.message == "Unknown config section 'tokenise'. Did you mean 'tokenize'?"
    assert info.value.hint.startswith("Valid sections: corpus, prepare, tokenize,")


@pytest.mark.parametrize(
    ("override", "code", "fragment"),
    [
        ("tokenize.split_mode=D", "E104", "tokenize.split_mode = 'D' is not allowed.\nValid values: 'A', 'B', 'C'."),
        ("word2vec.vector_size=abc", "E103", "word2vec.vector_size must be an integer, got 'abc'."),
        ("word2vec.vector_size=1.5", "E103", "must be an integer"),
        ("word2vec.sample=true", "E103", "word2vec.sample must be a number, got True."),
        ("tokenize.extra_corpora=[1]", "E103", "tokenize.extra_corpora must be a list of str, got [1]."),
        ("word2vec.vector_size=0", "E105", "word2vec.vector_size = 0 is too small: the minimum is 1."),
        ("classifier.freeze_embeddings=1", "E103", "classifier.freeze_embeddings must be true or false, got 1."),
        ("tasks.topic.classifier.dropout=2.0", "E105", "tasks.topic.classifier.dropout = 2.0 is too large: the maximum is 0.9."),
        ("tasks.topic.classifier.hiden_size=2", "E102", "Did you mean 'hidden_size'?"),
        ("train_topic.dropout=0.1", "E133", "Move its keys to [tasks.topic.classifier]"),
        ("tasks.Bad-Name.data=x.csv", "E130", "cannot name a task"),
    ],
)
def test_bad_values_are_explained(tmp_path, override, code, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, [override])
    assert info.value.code == code
    assert fragment in str(info.value)


def test_split_ratios_must_sum_to_one(tmp_path):
    with pytest.raises(ConfigError, match="E108: prepare.train_ratio \\+ dev_ratio \\+ test_ratio must sum to 1, got 1.1") as info:
        load_config(tmp_path, ["prepare.train_ratio=0.9"])
    assert "prepare.dev_ratio = 0.1" in info.value.hint


def test_tied_weights_need_equal_sizes(tmp_path):
    with pytest.raises(ConfigError, match="E108") as info:
        load_config(tmp_path, ["train_generator.hidden_size=128"])
    assert "train_generator.tie_weights" in info.value.hint
    assert (
        load_config(tmp_path, ["train_generator.hidden_size=128", "train_generator.tie_weights=false"])["train_generator"]["hidden_size"]
        == 128
    )


def test_config_file_is_read_and_validated(tmp_path):
    (tmp_path / "jpipe.toml").write_text('[tokenize]\nsplit_mode = "A"\n', encoding="utf-8")
    config = load_config(tmp_path)
    assert config["tokenize"]["split_mode"] == "A" and config.path == tmp_path / "jpipe.toml"
    (tmp_path / "jpipe.toml").write_text('[tokenize]\nsplit_mode = "Z"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="E104: tokenize.split_mode = 'Z' is not allowed"):
        load_config(tmp_path)
    (tmp_path / "jpipe.toml").write_text("[nonsense]\nx = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="E101: .*jpipe.toml: unknown section \\[nonsense\\]"):
        load_config(tmp_path)
    (tmp_path / "jpipe.toml").write_text("tokenize = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="E107: .*'tokenize' must be a \\[section\\] table"):
        load_config(tmp_path)
    (tmp_path / "jpipe.toml").write_text("[tokenize\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="E107: .*is not valid TOML"):
        load_config(tmp_path)


def test_default_toml_round_trips(tmp_path):
    (tmp_path / "jpipe.toml").write_text(default_toml(), encoding="utf-8")
    assert load_config(tmp_path).sections == load_config(tmp_path / "nowhere").sections
    assert "docs/readme_classifiers.md" not in default_toml()


def test_non_fingerprint_keys_are_left_out(tmp_path):
    config = load_config(tmp_path)
    assert "source" not in config.fingerprint_view("corpus")
    assert "workers" not in config.fingerprint_view("word2vec")
    assert config.fingerprint_view("word2vec")["vector_size"] == 100
    assert config.to_dict()["tokenize"]["extra_corpora"] == [] and config.to_dict()["tokenize"]["workers"] == 0
    assert {"workers", "engine", "batch_size"}.isdisjoint(config.fingerprint_view("tokenize"))
    assert {"split_mode", "extra_corpora", "store_fields", "shard_lines", "text_field"} <= set(config.fingerprint_view("tokenize"))
