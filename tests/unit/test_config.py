import pytest

from pipeline.config import SCHEMA, default_toml, load_config, parse_override
from pipeline.errors import PipelineError


def test_defaults_cover_every_section(tmp_path):
    config = load_config(tmp_path)
    assert set(config.sections) == set(SCHEMA)
    assert config["tokenize"]["split_mode"] == "C"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tokenize.split_mode=A", ("tokenize", "split_mode", "A")),
        ("word2vec.vector_size=64", ("word2vec", "vector_size", 64)),
        ("train_topic.freeze_embeddings=true", ("train_topic", "freeze_embeddings", True)),
        ('tokenize.extra_corpora=["a.txt", "b.txt"]', ("tokenize", "extra_corpora", ["a.txt", "b.txt"])),
        ("corpus.source=/tmp/knbc.tar.bz2", ("corpus", "source", "/tmp/knbc.tar.bz2")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_override_applies_and_widens_int_to_float(tmp_path):
    config = load_config(tmp_path, ["train_topic.learning_rate=1", "tokenize.split_mode=B"])
    assert config["train_topic"]["learning_rate"] == 1.0 and isinstance(config["train_topic"]["learning_rate"], float)
    assert config["tokenize"]["split_mode"] == "B"


def test_unknown_key_names_valid_keys(tmp_path):
    with pytest.raises(PipelineError) as info:
        load_config(tmp_path, ["tokenize.split_mod=A"])
    assert "Did you mean 'split_mode'" in info.value.message
    assert "split_mode" in info.value.hint and "extra_corpora" in info.value.hint


def test_unknown_section_names_valid_sections(tmp_path):
    with pytest.raises(PipelineError) as info:
        load_config(tmp_path, ["tokenise.split_mode=A"])
    assert "tokenize" in info.value.message + info.value.hint


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("tokenize.split_mode=D", "Valid values: 'A', 'B', 'C'"),
        ("word2vec.vector_size=abc", "must be an integer"),
        ("word2vec.vector_size=0", "minimum"),
        ("train_topic.freeze_embeddings=1", "true or false"),
        ("train_topic.dropout=2.0", "maximum"),
    ],
)
def test_bad_values_are_explained(tmp_path, override, fragment):
    with pytest.raises(PipelineError) as info:
        load_config(tmp_path, [override])
    assert fragment in str(info.value)


def test_split_ratios_must_sum_to_one(tmp_path):
    with pytest.raises(PipelineError, match="sum to 1"):
        load_config(tmp_path, ["prepare.train_ratio=0.9"])


def test_config_file_is_read_and_validated(tmp_path):
    (tmp_path / "jpipe.toml").write_text('[tokenize]\nsplit_mode = "A"\n', encoding="utf-8")
    assert load_config(tmp_path)["tokenize"]["split_mode"] == "A"
    (tmp_path / "jpipe.toml").write_text('[tokenize]\nsplit_mode = "Z"\n', encoding="utf-8")
    with pytest.raises(PipelineError):
        load_config(tmp_path)
    (tmp_path / "jpipe.toml").write_text("[nonsense]\nx = 1\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="unknown section"):
        load_config(tmp_path)


def test_default_toml_round_trips(tmp_path):
    (tmp_path / "jpipe.toml").write_text(default_toml(), encoding="utf-8")
    assert load_config(tmp_path).sections == load_config(tmp_path / "nowhere").sections


def test_non_fingerprint_keys_are_left_out(tmp_path):
    config = load_config(tmp_path)
    assert "source" not in config.fingerprint_view("corpus")
    assert "workers" not in config.fingerprint_view("word2vec")
    assert "vector_size" in config.fingerprint_view("word2vec")
