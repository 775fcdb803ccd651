"""One TOML config with a section per stage: defaults, file, ``--set`` overrides, validation.

The effective config is built in three layers, later ones winning:

1. the defaults below (``SCHEMA``),
2. ``jpipe.toml`` in the project directory (optional),
3. ``--set section.key=value`` from the command line.

Everything is validated before any stage runs: an unknown section or key, or a
value of the wrong type or outside its allowed range, raises a ``PipelineError``
naming the valid choices.
"""

from __future__ import annotations

import copy
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

CONFIG_FILENAME = "jpipe.toml"
OFFICIAL_KNBC_URL = "https://nlp.ist.i.kyoto-u.ac.jp/kuntt/KNBC_v1.0_090925_utf8.tar.bz2"


@dataclass(frozen=True)
class Setting:
    """One config key: its default, constraints and help text.

    ``fingerprint=False`` keeps a key out of the stage fingerprint: it changes
    *how* a stage runs (where to download from, how many threads) but not *what*
    it produces, so changing it must not make the stage stale.
    """

    default: Any
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    fingerprint: bool = True
    item_type: type | None = None  # for lists


def _classifier_section(task: str) -> dict[str, Setting]:
    return {
        # Defaults chosen on the fixed-seed dev split (see docs/readme_classifiers.md): ja_ginza's
        # static vectors, kept frozen so that words unseen in training stay compatible with the
        # trained ones; word dropout for topic, which overfits within one epoch otherwise.
        "embedding_init": Setting("spacy", "Initial embeddings.", choices=("word2vec", "spacy", "imported", "random")),
        "freeze_embeddings": Setting(True, "Keep the embedding table fixed during training."),
        "embedding_dim": Setting(100, "Embedding size when embedding_init = random (pretrained vectors bring their own size).", min=1),
        "vocab_from_vectors": Setting(True, "Also give a row to words outside the training split that have a pretrained vector."),
        "embedding_dropout": Setting(0.0, "Dropout on the embeddings.", min=0.0, max=0.9),
        "word_dropout": Setting(0.2 if task == "topic" else 0.0, "Share of training tokens replaced by <unk> (regularises small data).", min=0.0, max=0.9),
        "token_field": Setting("norm", "Token field fed to the model.", choices=("surface", "lemma", "norm")),
        "min_count": Setting(1, "Minimum training-split frequency for a word to get its own row.", min=1),
        "cell": Setting("lstm", "Recurrent cell.", choices=("lstm", "gru")),
        "num_layers": Setting(1, "Stacked recurrent layers.", min=1, max=4),
        "hidden_size": Setting(128, "Hidden units per direction.", min=1),
        "bidirectional_merge": Setting("concat", "How forward and backward states are merged.", choices=("concat", "sum", "ave", "mul")),
        "attention": Setting("additive", "Attention pooling.", choices=("additive", "scaled_dot")),
        "attention_size": Setting(128, "Hidden size of the additive attention scorer.", min=1),
        "dropout": Setting(0.3, "Dropout before the output layer.", min=0.0, max=0.9),
        "max_tokens": Setting(200, "Tokens the model reads at once: longer training sentences are truncated; `jpipe classify` aggregates longer reviews over windows of this size.", min=1),
        "epochs": Setting(20, "Maximum training epochs.", min=1),
        "patience": Setting(4, "Early stopping: epochs without dev macro-F1 gain.", min=1),
        "batch_size": Setting(32, "Sentences per batch.", min=1),
        "learning_rate": Setting(2e-3, "Adam learning rate.", min=0.0),
        "weight_decay": Setting(0.0, "AdamW weight decay.", min=0.0),
        "class_weights": Setting(task == "sentiment", "Weight the loss by inverse class frequency."),
        "grad_clip": Setting(1.0, "Gradient-norm clipping (0 disables).", min=0.0),
        "device": Setting("auto", "auto (CUDA when present), cpu or cuda.", choices=("auto", "cpu", "cuda"), fingerprint=False),
        "amp": Setting(True, "Mixed precision on GPU (ignored on CPU).", fingerprint=False),
        "seed": Setting(13, "Random seed."),
    }


SCHEMA: dict[str, dict[str, Setting]] = {
    "corpus": {
        "source": Setting(
            OFFICIAL_KNBC_URL,
            "Where KNBC comes from: the official URL, a local .tar.bz2, or an extracted directory. "
            "Overridden by --source and KNBC_SOURCE.",
            fingerprint=False,
        ),
        "expected_articles": Setting(249, "Articles the corpus must have.", min=1),
        "expected_sentences": Setting(4186, "Sentences the corpus must have.", min=1),
    },
    "prepare": {
        "train_ratio": Setting(0.8, "Share of articles in the training split.", min=0.0, max=1.0),
        "dev_ratio": Setting(0.1, "Share of articles in the dev split.", min=0.0, max=1.0),
        "test_ratio": Setting(0.1, "Share of articles in the test split.", min=0.0, max=1.0),
        "seed": Setting(13, "Seed of the article shuffle."),
    },
    "tokenize": {
        "split_mode": Setting("C", "Sudachi split mode: A (short units), B (middle), C (named entities / long units).", choices=("A", "B", "C")),
        "extra_corpora": Setting(
            [], "Extra plain-text files (one document per line, .gz allowed) tokenized after KNBC.", item_type=str
        ),
        "batch_size": Setting(256, "Texts per tokenization batch.", min=1, fingerprint=False),
    },
    "word2vec": {
        "token_field": Setting("norm", "Token field trained on (Sudachi normalized form, as chiVe).", choices=("surface", "lemma", "norm")),
        "sg": Setting(1, "1 = skip-gram, 0 = CBOW.", choices=(0, 1)),
        "vector_size": Setting(100, "Dimensions.", min=1),
        "window": Setting(5, "Context window.", min=1),
        "min_count": Setting(2, "Ignore words rarer than this.", min=1),
        "negative": Setting(10, "Negative samples.", min=0),
        "sample": Setting(1e-3, "Down-sampling threshold of frequent words (0 disables; gensim's default 1e-3).", min=0.0),
        "epochs": Setting(30, "Training epochs.", min=1),
        "seed": Setting(13, "Random seed."),
        "workers": Setting(1, "Worker threads (1 makes training reproducible).", min=1, fingerprint=False),
        "use_extra_corpora": Setting(True, "Also train on tokenize.extra_corpora."),
    },
    "spacy_vectors": {
        "model": Setting("ja_ginza", "spaCy package whose static vectors are used."),
        "token_field": Setting("norm", "Token field looked up in the spaCy vectors.", choices=("surface", "lemma", "norm")),
        "min_count": Setting(1, "Vocabulary: words seen at least this often in KNBC.", min=1),
    },
    "evaluate_vectors": {
        "synonyms_path": Setting(
            "../shared/data/sudachi-synonyms/synonyms.txt.gz",
            "Sudachi synonym dictionary (relative paths are resolved against the project directory).",
            fingerprint=False,
        ),
        "negative_pairs_per_positive": Setting(1, "Random pairs drawn per synonym pair for ROC-AUC.", min=1),
        "neighbour_words": Setting(["京都", "携帯", "美味しい", "野球", "店", "電話", "寺", "試合"], "Words shown with their nearest neighbours.", item_type=str),
        "map_words": Setting(150, "Most frequent words drawn in the 2-D map.", min=10),
        "map_method": Setting("tsne", "2-D projection of the map: t-SNE or PCA.", choices=("tsne", "pca")),
        "neighbours_topn": Setting(10, "Neighbours listed per word in the report.", min=1),
        "seed": Setting(13, "Random seed."),
    },
    "train_topic": _classifier_section("topic"),
    "train_sentiment": _classifier_section("sentiment"),
    "train_generator": {
        "level": Setting("word", "word (GiNZA surface tokens) or char.", choices=("word", "char")),
        "min_count": Setting(2, "Vocabulary: words rarer than this become <unk>.", min=1),
        "sequence_unit": Setting("article", "Train on whole articles (the LSTM also sees the previous sentences) or on single sentences.", choices=("sentence", "article")),
        "bptt": Setting(40, "Truncated BPTT length in tokens (0 = whole sequences); the state still flows across chunks.", min=0),
        "embedding_size": Setting(256, "Embedding dimensions.", min=1),
        "embedding_init": Setting("random", "Initial embeddings.", choices=("random", "word2vec", "spacy", "imported")),
        "hidden_size": Setting(256, "LSTM hidden units.", min=1),
        "num_layers": Setting(1, "Stacked LSTM layers.", min=1, max=6),
        "dropout": Setting(0.5, "Dropout on embeddings, between layers and before the decoder.", min=0.0, max=0.9),
        "tie_weights": Setting(True, "Share input and output embeddings (needs embedding_size == hidden_size)."),
        "theme_conditioning": Setting(True, "Learn a theme embedding so generation can follow one theme."),
        "theme_dropout": Setting(0.25, "Share of training sequences shown as 'any theme', so generation without --theme works too.", min=0.0, max=1.0),
        "epochs": Setting(12, "Maximum epochs.", min=1),
        "patience": Setting(2, "Early stopping: epochs without dev perplexity gain.", min=1),
        "batch_size": Setting(8, "Sequences (articles or sentences) per batch.", min=1),
        "learning_rate": Setting(2e-3, "Adam learning rate.", min=0.0),
        "grad_clip": Setting(0.5, "Gradient-norm clipping (0 disables).", min=0.0),
        "lr_decay": Setting(0.5, "Learning rate factor after an epoch without dev perplexity gain.", min=0.0, max=1.0),
        "device": Setting("auto", "auto (CUDA when present), cpu or cuda.", choices=("auto", "cpu", "cuda"), fingerprint=False),
        "seed": Setting(13, "Random seed."),
    },
    "evaluate_classifiers": {
        "svm_c": Setting(1.0, "Regularisation C of the TF-IDF linear SVM baseline.", min=0.0),
        "svm_class_weight": Setting("balanced", "Class weights of the TF-IDF SVM baseline.", choices=("balanced", "none")),
        "device": Setting("auto", "Where the BiLSTM models are evaluated: auto (CUDA when present), cpu or cuda.", choices=("auto", "cpu", "cuda"), fingerprint=False),
        "seed": Setting(13, "Random seed of the baselines."),
    },
    "evaluate_generator": {
        "ngram_order": Setting(3, "Order of the n-gram baseline language model.", min=1, max=6),
        "ngram_smoothing": Setting("kneser_ney", "n-gram smoothing.", choices=("kneser_ney", "witten_bell")),
        "ngram_discount": Setting(0.75, "Kneser-Ney discount (nltk's default 0.1 is far below the usual 0.75).", min=0.0, max=1.0),
        "num_samples": Setting(5, "Generated samples stored in the report.", min=0),
        "seed": Setting(13, "Random seed of the samples."),
    },
}


@dataclass
class Config:
    """The effective, validated configuration: ``config["tokenize"]["split_mode"]``."""

    sections: dict[str, dict[str, Any]]
    path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

    def fingerprint_view(self, section: str) -> dict[str, Any]:
        """The keys of ``section`` that decide what the stage produces."""
        schema = SCHEMA[section]
        return {key: value for key, value in self.sections[section].items() if schema[key].fingerprint}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.sections)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _type_name(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(type(value), type(value).__name__)


def validate_value(section: str, key: str, value: Any) -> Any:
    """Check one value against the schema and return it (ints widened to floats)."""
    if section not in SCHEMA:
        raise PipelineError(
            f"Unknown config section '{section}'.{_suggest(section, list(SCHEMA))}",
            hint=f"Valid sections: {', '.join(SCHEMA)}.",
        )
    if key not in SCHEMA[section]:
        valid = list(SCHEMA[section])
        raise PipelineError(
            f"Unknown config key '{section}.{key}'.{_suggest(key, valid)}",
            hint=f"Valid keys in [{section}]: {', '.join(valid)}.",
        )
    setting = SCHEMA[section][key]
    default = setting.default
    name = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise PipelineError(f"{name} must be true or false, got {value!r}.")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PipelineError(f"{name} must be a number, got {value!r}.")
        value = float(value)
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise PipelineError(f"{name} must be an integer, got {value!r}.")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise PipelineError(f"{name} must be a string, got {value!r}.")
    elif isinstance(default, list):
        if not isinstance(value, list) or (setting.item_type and not all(isinstance(v, setting.item_type) for v in value)):
            raise PipelineError(f"{name} must be a list of {setting.item_type.__name__ if setting.item_type else 'values'}, got {value!r}.")
    if setting.choices is not None and value not in setting.choices:
        raise PipelineError(
            f"{name} = {value!r} is not allowed.",
            hint=f"Valid values: {', '.join(repr(c) for c in setting.choices)}.",
        )
    if setting.min is not None and value < setting.min:
        raise PipelineError(f"{name} = {value!r} is too small: the minimum is {setting.min}.")
    if setting.max is not None and value > setting.max:
        raise PipelineError(f"{name} = {value!r} is too large: the maximum is {setting.max}.")
    return value


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML, falling back to a plain string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise PipelineError(
            f"Bad --set '{text}'.",
            hint="Write --set section.key=value, for example --set tokenize.split_mode=A.",
        )
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words such as A or word2vec are plain strings
    return section, key, value


def load_config(project_dir: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Defaults, then ``jpipe.toml`` in ``project_dir`` (if any), then ``overrides``."""
    sections = {name: {key: copy.deepcopy(s.default) for key, s in keys.items()} for name, keys in SCHEMA.items()}
    path = Path(project_dir) / CONFIG_FILENAME
    if path.exists():
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise PipelineError(f"{path} is not valid TOML: {exc}.") from None
        for section, values in data.items():
            if section not in SCHEMA:
                raise PipelineError(
                    f"{path}: unknown section [{section}].{_suggest(section, list(SCHEMA))}",
                    hint=f"Valid sections: {', '.join(SCHEMA)}.",
                )
            if not isinstance(values, dict):
                raise PipelineError(f"{path}: '{section}' must be a [section] table.")
            for key, value in values.items():
                sections[section][key] = validate_value(section, key, value)
    applied: dict[str, Any] = {}
    for text in overrides or []:
        section, key, value = parse_override(text)
        sections[section][key] = validate_value(section, key, value)
        applied[f"{section}.{key}"] = value
    prepare = sections["prepare"]
    total = prepare["train_ratio"] + prepare["dev_ratio"] + prepare["test_ratio"]
    if abs(total - 1.0) > 1e-6:
        raise PipelineError(
            f"prepare.train_ratio + dev_ratio + test_ratio must sum to 1, got {total:g}.",
            hint="For example --set prepare.train_ratio=0.8 --set prepare.dev_ratio=0.1 --set prepare.test_ratio=0.1.",
        )
    generator = sections["train_generator"]
    if generator["tie_weights"] and generator["embedding_size"] != generator["hidden_size"]:
        raise PipelineError(
            "train_generator.tie_weights needs embedding_size == hidden_size "
            f"(got {generator['embedding_size']} and {generator['hidden_size']}).",
            hint="Set both sizes equal, or --set train_generator.tie_weights=false.",
        )
    return Config(sections=sections, path=path if path.exists() else None, overrides=applied)


def default_toml() -> str:
    """The default config as commented TOML, for ``jpipe config --defaults``."""
    lines: list[str] = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, setting in keys.items():
            lines.append(f"# {setting.help}")
            lines.append(f"{key} = {toml_value(setting.default)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)
