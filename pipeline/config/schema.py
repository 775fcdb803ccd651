"""The config schema: one frozen dataclass per section, defaults and constraints in ONE place.

Each key is a dataclass field made with :func:`setting` (default, help text, allowed
choices, range, whether it is part of the stage fingerprint). Its type comes from the
annotation (``bool``, ``int``, ``float``, ``str`` or ``list[str]``). ``SCHEMA``
(section -> key -> :class:`Setting`) is derived from these classes, never written twice.

A section validates itself when it is built (types, choices, ranges, and the rules that
tie several keys together) and reads like a read-only dict, because stage code does
``section["key"]``, ``section.get(...)``, ``dict(section)`` and ``{**section}``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.errors import ConfigError

OFFICIAL_KNBC_URL = "https://nlp.ist.i.kyoto-u.ac.jp/kuntt/KNBC_v1.0_090925_utf8.tar.bz2"
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}


@dataclass(frozen=True)
class Setting:
    """One config key: its default, type, constraints and help text.

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
    type: type = object

    def check(self, name: str, value: Any) -> Any:
        """``value`` if it fits this setting (ints widened to floats, lists copied); else a ``ConfigError`` naming ``name``."""
        value = self._check_type(name, value)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                "E104", f"{name} = {value!r} is not allowed.", hint=f"Valid values: {', '.join(repr(c) for c in self.choices)}."
            )
        if self.min is not None and value < self.min:
            raise ConfigError("E105", f"{name} = {value!r} is too small: the minimum is {self.min}.")
        if self.max is not None and value > self.max:
            raise ConfigError("E105", f"{name} = {value!r} is too large: the maximum is {self.max}.")
        return value

    def _check_type(self, name: str, value: Any) -> Any:
        kind = self.type
        if kind is list:
            if not isinstance(value, list) or (self.item_type and not all(isinstance(v, self.item_type) for v in value)):
                items = self.item_type.__name__ if self.item_type else "values"
                raise ConfigError("E103", f"{name} must be a list of {items}, got {value!r}.")
            return list(value)
        # bool is an int subclass: true/false is never accepted as a number, nor 1 as a bool.
        fits = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is float and not fits:
            fits = isinstance(value, int) and not isinstance(value, bool)
        if not fits:
            raise ConfigError("E103", f"{name} must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}.")
        return float(value) if kind is float else value


def setting(
    default: Any,
    *,
    help: str,
    choices: tuple | None = None,
    min: float | None = None,
    max: float | None = None,
    fingerprint: bool = True,
) -> Any:
    """A section field: its default plus the constraints that :class:`Setting` carries."""
    metadata = {"help": help, "choices": choices, "min": min, "max": max, "fingerprint": fingerprint}
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Section(Mapping):
    """Base of the section dataclasses: validated on construction, read-only Mapping of key -> value.

    Config keys are the dataclass fields, so they cannot be named like the methods here
    (``settings``, ``check``, ``to_dict``, ``get``, ``items``, ``keys``, ``values``) or ``section_name``.
    """

    section_name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for key, spec in self.settings().items():
            # object.__setattr__: the dataclass is frozen; this is its own validated, widened value.
            object.__setattr__(self, key, spec.check(f"{self.section_name}.{key}", getattr(self, key)))
        self.check()

    def check(self) -> None:
        """Rules that tie several keys together (``ConfigError`` E108); none by default."""

    def unfingerprinted(self) -> tuple[str, ...]:
        """Keys left out of the stage fingerprint at their current value (a key that is new and still
        at its neutral value must not make an existing project stale); none by default."""
        return ()

    @classmethod
    @functools.cache
    def settings(cls) -> dict[str, Setting]:
        """key -> :class:`Setting`, in declaration order."""
        hints = typing.get_type_hints(cls)
        result = {}
        for spec in dataclasses.fields(cls):
            hint = hints[spec.name]
            kind = typing.get_origin(hint) or hint
            item_type = typing.get_args(hint)[0] if kind is list else None
            default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
            result[spec.name] = Setting(default=default, type=kind, item_type=item_type, **spec.metadata)
        return result

    def __getitem__(self, key: str) -> Any:
        if key not in self.settings():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.settings())

    def __len__(self) -> int:
        return len(self.settings())

    def to_dict(self) -> dict[str, Any]:
        return {key: type(value)(value) if isinstance(value, list | dict) else value for key, value in self.items()}


# eq=False keeps Mapping's __eq__, so a section also equals a plain dict with the same items.
section = dataclasses.dataclass(frozen=True, eq=False)


@section
class CorpusSection(Section):
    section_name: ClassVar[str] = "corpus"
    source: str = setting(
        OFFICIAL_KNBC_URL,
        help="Where KNBC comes from: the official URL, a local .tar.bz2, or an extracted directory. Overridden by --source and KNBC_SOURCE.",
        fingerprint=False,
    )
    expected_articles: int = setting(249, help="Articles the corpus must have.", min=1)
    expected_sentences: int = setting(4186, help="Sentences the corpus must have.", min=1)


@section
class PrepareSection(Section):
    section_name: ClassVar[str] = "prepare"
    train_ratio: float = setting(0.8, help="Share of articles in the training split.", min=0.0, max=1.0)
    dev_ratio: float = setting(0.1, help="Share of articles in the dev split.", min=0.0, max=1.0)
    test_ratio: float = setting(0.1, help="Share of articles in the test split.", min=0.0, max=1.0)
    seed: int = setting(13, help="Seed of the article shuffle.")

    def check(self) -> None:
        total = self.train_ratio + self.dev_ratio + self.test_ratio
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                "E108",
                f"prepare.train_ratio + dev_ratio + test_ratio must sum to 1, got {total:g}.",
                hint="For example prepare.train_ratio = 0.8, prepare.dev_ratio = 0.1, prepare.test_ratio = 0.1.",
            )


@section
class TokenizeSection(Section):
    section_name: ClassVar[str] = "tokenize"
    split_mode: str = setting(
        "C", help="Sudachi split mode: A (short units), B (middle), C (named entities / long units).", choices=("A", "B", "C")
    )
    extra_corpora: list[str] = setting(
        [],
        help="Unlabelled corpora tokenized into the token store data/tokens/extra/: .txt or .txt.gz (a paragraph a line, "
        "a blank line between documents) or .jsonl (a document a row). Paths are relative to the project.",
    )
    batch_size: int = setting(256, help="Texts per tokenization batch.", min=1, fingerprint=False)
    text_field: str = setting("text", help="The field of a .jsonl corpus row that holds its text.")
    store_fields: list[str] = setting(
        ["surface", "norm"],
        help="Token fields kept in the token store (norm: word2vec; surface: language models). Any of surface, lemma, norm, pos, tag.",
    )
    shard_lines: int = setting(20000, help="Corpus lines per shard: the unit of parallel work and of resuming.", min=1)
    workers: int = setting(0, help="Processes that tokenize the extra corpora (0 = one per core).", min=0, max=512, fingerprint=False)
    engine: str = setting(
        "local",
        help="Who runs the tokenize workers: local processes, or Ray (pip install jpipe[ray]).",
        choices=("local", "ray"),
        fingerprint=False,
    )

    def check(self) -> None:
        valid = ("surface", "lemma", "norm", "pos", "tag")
        unknown = [name for name in self.store_fields if name not in valid]
        if unknown or not self.store_fields or len(set(self.store_fields)) != len(self.store_fields):
            raise ConfigError(
                "E104",
                f"tokenize.store_fields = {self.store_fields!r} is not allowed.",
                hint=f"Give one or more distinct fields of: {', '.join(valid)}.",
            )


_TOKEN_FIELDS = ("surface", "lemma", "norm")


@section
class Word2VecSection(Section):
    section_name: ClassVar[str] = "word2vec"
    token_field: str = setting("norm", help="Token field trained on (Sudachi normalized form, as chiVe).", choices=_TOKEN_FIELDS)
    sg: int = setting(1, help="1 = skip-gram, 0 = CBOW.", choices=(0, 1))
    vector_size: int = setting(100, help="Dimensions.", min=1)
    window: int = setting(5, help="Context window.", min=1)
    min_count: int = setting(2, help="Ignore words rarer than this.", min=1)
    negative: int = setting(10, help="Negative samples.", min=0)
    sample: float = setting(1e-3, help="Down-sampling threshold of frequent words (0 disables; gensim's default 1e-3).", min=0.0)
    epochs: int = setting(
        0, help="Training epochs (0 = auto: 30 up to 1M training tokens, then fewer as the corpus grows, at least 5).", min=0
    )
    seed: int = setting(13, help="Random seed.")
    workers: int = setting(
        0,
        help="Worker threads (0 = auto: 1 up to 1M training tokens, which makes training reproducible; one per core above).",
        min=0,
        fingerprint=False,
    )
    use_extra_corpora: bool = setting(True, help="Also train on the token store of tokenize.extra_corpora (streamed).")


@section
class SpacyVectorsSection(Section):
    section_name: ClassVar[str] = "spacy_vectors"
    model: str = setting("ja_ginza", help="spaCy package whose static vectors are used.")
    token_field: str = setting("norm", help="Token field looked up in the spaCy vectors.", choices=_TOKEN_FIELDS)
    min_count: int = setting(1, help="Vocabulary: words seen at least this often in KNBC.", min=1)


@section
class GinzaVectorsSection(Section):
    """``[ginza_vectors]``: the whole static table of a spaCy package (480k keys for ja_ginza), exported once for queries."""

    section_name: ClassVar[str] = "ginza_vectors"
    model: str = setting("ja_ginza", help="spaCy package whose whole static vector table is exported.")
    dtype: str = setting(
        "float32", help="Stored row type: float32, or float16 for half the disk and memory.", choices=("float32", "float16")
    )


@section
class CombinedVectorsSection(Section):
    """``[combined_vectors]``: sources concatenated over the union of their keys (kept only if it wins on the dev half)."""

    section_name: ClassVar[str] = "combined_vectors"
    sources: list[str] = setting(
        ["ginza", "word2vec"], help="Two or more of word2vec, spacy, ginza: each key gets every source's unit vector (zeros where missing)."
    )
    dtype: str = setting(
        "float32", help="Stored row type: float32, or float16 for half the disk and memory.", choices=("float32", "float16")
    )


@section
class EvaluateVectorsSection(Section):
    section_name: ClassVar[str] = "evaluate_vectors"
    synonyms_path: str = setting(
        "../shared/data/sudachi-synonyms/synonyms.txt.gz",
        help="Sudachi synonym dictionary (relative paths are resolved against the project directory).",
        fingerprint=False,
    )
    negative_pairs_per_positive: int = setting(1, help="Random pairs drawn per synonym pair for ROC-AUC.", min=1)
    neighbour_words: list[str] = setting(
        ["京都", "携帯", "美味しい", "野球", "店", "電話", "寺", "試合"], help="Words shown with their nearest neighbours."
    )
    map_words: int = setting(150, help="Most frequent words drawn in the 2-D map.", min=10)
    map_method: str = setting("tsne", help="2-D projection of the map: t-SNE or PCA.", choices=("tsne", "pca"))
    neighbours_topn: int = setting(10, help="Neighbours listed per word in the report.", min=1)
    seed: int = setting(13, help="Random seed.")
    retrofit_source: str = setting(
        "none",
        help="Also retrofit this source to the dev half's synonym groups (Faruqui et al. 2015) and report its dev/test figures.",
        choices=("none", "word2vec", "spacy", "imported", "ginza", "combined"),
    )
    retrofit_alpha: float = setting(1.0, help="Retrofitting: weight of a row's original vector (the paper's 1.0).", min=0.0)


_DEVICES = ("auto", "cpu", "cuda")
_DEVICE_HELP = "auto (CUDA when present), cpu or cuda."


@section
class ClassifierSection(Section):
    """``[classifier]``: the base settings of every task's BiLSTM + attention classifier.

    A task changes any of them in its ``[tasks.NAME.classifier]`` table (``pipeline.config.tasks``).
    Defaults chosen on the fixed-seed dev split: ja_ginza's static vectors, kept frozen so that
    words unseen in training stay compatible with the trained ones.
    """

    section_name: ClassVar[str] = "classifier"
    embedding_init: str = setting("spacy", help="Initial embeddings.", choices=("word2vec", "spacy", "imported", "random"))
    freeze_embeddings: bool = setting(True, help="Keep the embedding table fixed during training.")
    embedding_dim: int = setting(100, help="Embedding size when embedding_init = random (pretrained vectors bring their own size).", min=1)
    vocab_from_vectors: bool = setting(True, help="Also give a row to words outside the training split that have a pretrained vector.")
    embedding_dropout: float = setting(0.0, help="Dropout on the embeddings.", min=0.0, max=0.9)
    word_dropout: float = setting(0.0, help="Share of training tokens replaced by <unk> (regularises small data).", min=0.0, max=0.9)
    token_field: str = setting("norm", help="Token field fed to the model.", choices=_TOKEN_FIELDS)
    min_count: int = setting(1, help="Minimum training-split frequency for a word to get its own row.", min=1)
    cell: str = setting("lstm", help="Recurrent cell.", choices=("lstm", "gru"))
    num_layers: int = setting(1, help="Stacked recurrent layers.", min=1, max=4)
    hidden_size: int = setting(128, help="Hidden units per direction.", min=1)
    bidirectional_merge: str = setting(
        "concat", help="How forward and backward states are merged.", choices=("concat", "sum", "ave", "mul")
    )
    attention: str = setting("additive", help="Attention pooling.", choices=("additive", "scaled_dot"))
    attention_size: int = setting(128, help="Hidden size of the additive attention scorer.", min=1)
    dropout: float = setting(0.3, help="Dropout before the output layer.", min=0.0, max=0.9)
    max_tokens: int = setting(
        200,
        help="Tokens the model reads at once: longer training sentences are truncated; `jpipe classify` aggregates longer reviews over windows of this size.",
        min=1,
    )
    epochs: int = setting(20, help="Maximum training epochs.", min=1)
    patience: int = setting(4, help="Early stopping: epochs without dev macro-F1 gain.", min=1)
    batch_size: int = setting(32, help="Sentences per batch.", min=1)
    learning_rate: float = setting(2e-3, help="Adam learning rate.", min=0.0)
    weight_decay: float = setting(0.0, help="AdamW weight decay.", min=0.0)
    class_weights: bool = setting(False, help="Weight the loss by inverse class frequency.")
    grad_clip: float = setting(1.0, help="Gradient-norm clipping (0 disables).", min=0.0)
    device: str = setting("auto", help=_DEVICE_HELP, choices=_DEVICES, fingerprint=False)
    amp: bool = setting(True, help="Mixed precision on GPU (ignored on CPU).", fingerprint=False)
    seed: int = setting(13, help="Random seed.")
    seeds: int = setting(
        5,
        help="Models trained (seed, seed+1, ...): the one kept is the median by dev macro-F1; evaluation gives test mean and std over all.",
        min=1,
        max=50,
    )
    init: str = setting(
        "scratch",
        help="scratch, or pretrained: embeddings and LSTM from the forward and backward LMs of the pretrain_lm stage.",
        choices=("scratch", "pretrained"),
    )
    pretrained_freeze_epochs: int = setting(1, help="init = pretrained: epochs in which the pretrained LSTM stays fixed.", min=0)
    pretrained_lr_factor: float = setting(
        0.3, help="init = pretrained: the LSTM's learning rate after unfreezing, as a share of learning_rate.", min=0.0, max=1.0
    )
    target_lm_epochs: int = setting(
        0,
        help="init = pretrained: epochs of ULMFiT's target-LM fine-tuning (stage finetune_lm_TASK: the general LMs go on "
        "learning on the task's training texts before the classifier starts from them); 0 = off.",
        min=0,
        max=50,
    )
    target_lm_learning_rate: float = setting(1e-3, help="init = pretrained: Adam learning rate of the target-LM fine-tuning.", min=0.0)
    unfreezing: str = setting(
        "simple",
        help="init = pretrained: simple (the LSTM frozen for pretrained_freeze_epochs, then at pretrained_lr_factor) or "
        "gradual (ULMFiT: epoch 1 trains the attention and output layers, each later epoch unfreezes the next group down: "
        "LSTM, then the embedding unless freeze_embeddings; discriminative rates learning_rate / lr_decay**depth).",
        choices=("simple", "gradual"),
    )
    lr_decay: float = setting(2.6, help="unfreezing = gradual: each layer group down learns this many times slower.", min=1.0)
    schedule: str = setting(
        "constant",
        help="Learning-rate schedule over the epochs: constant, or slanted_triangular (ULMFiT: a short linear warm-up to "
        "the rate over the first 10% of the steps, then a long linear decay to 1/32 of it).",
        choices=("constant", "slanted_triangular"),
    )
    calibrate: bool = setting(
        True,
        help="Fit a temperature on dev for each published model (each seed and the ensemble) into its calibration.json: "
        "`jpipe classify` then gives calibrated probabilities (--no-calibration for the raw ones).",
    )
    ensemble: bool = setting(
        False,
        help="Keep every seed as an ensemble (needs seeds > 1): inference averages the seeds' calibrated probabilities "
        "(ensemble.json in the model directory); off: the median-dev seed alone is used.",
    )

    def check(self) -> None:
        if self.init == "pretrained" and self.cell != "lstm":
            raise ConfigError(
                "E108",
                f"classifier.init = pretrained needs cell = lstm (the pretrained language models are LSTMs), got {self.cell!r}.",
                hint='Set cell = "lstm", or init = "scratch".',
            )

    def unfingerprinted(self) -> tuple[str, ...]:
        # a scratch, single-seed classifier keeps the fingerprint of before these keys existed; so does every
        # classifier whose newer keys keep their defaults
        newer = tuple(key for key, default in NEWER_KEY_DEFAULTS.items() if getattr(self, key) == default)
        return (*(PRETRAINED_ONLY_KEYS if self.init == "scratch" else ()), *(("seeds",) if self.seeds == 1 else ()), *newer)


# Keys that only matter with init = pretrained: left out of a scratch classifier's fingerprint.
PRETRAINED_ONLY_KEYS = (
    "init",
    "pretrained_freeze_epochs",
    "pretrained_lr_factor",
    "target_lm_epochs",
    "target_lm_learning_rate",
    "unfreezing",
    "lr_decay",
)
# Keys added after models were trained and published: at these values a model trains as before they existed.
NEWER_KEY_DEFAULTS = {
    "target_lm_epochs": 0,
    "target_lm_learning_rate": 1e-3,
    "unfreezing": "simple",
    "lr_decay": 2.6,
    "schedule": "constant",
    "calibrate": True,  # calibration and ensembles act after training (the train stage's version says what it writes)
    "ensemble": False,
}


@section
class PretrainLMSection(Section):
    """``[pretrain_lm]``: language-model pretraining on unlabelled text.

    Stage ``pretrain_lm``: forward and backward word LSTM LMs that initialise classifiers with
    init = pretrained; sizes, token field and initial vectors come from ``[classifier]``. Stage
    ``pretrain_generator``: the generator's own LM (train_generator init = pretrained), with the
    generator's shape and vocabulary; it uses the budget and optimisation keys here, not
    vocab_size, min_count, freeze_vectors or adaptive_softmax. Each runs only when something uses it.
    """

    section_name: ClassVar[str] = "pretrain_lm"
    max_tokens: int = setting(
        1_500_000,
        help="Training tokens per direction (the budget): corpus text spread over all documents, repeated if the corpus is smaller.",
        min=1000,
    )
    rounds: int = setting(
        5, help="The budget is trained in this many rounds, each followed by the held-apart perplexity and a checkpoint.", min=1
    )
    patience: int = setting(2, help="Early stopping: rounds without held-apart perplexity gain.", min=1)
    vocab_size: int = setting(
        0, help="Words in the vocabulary besides the specials (0 = every word seen min_count times, at most 50,000).", min=0
    )
    min_count: int = setting(3, help="Words seen fewer times in the training text become <unk>.", min=1)
    freeze_vectors: bool = setting(
        True,
        help="Keep the embedding rows that have a pretrained vector fixed (the classifier's frozen input space); train the others.",
    )
    adaptive_softmax: bool = setting(
        True, help="Adaptive softmax (several times faster on large vocabularies) instead of the full softmax."
    )
    bptt: int = setting(35, help="Truncated BPTT length in tokens.", min=2)
    batch_size: int = setting(32, help="Parallel token streams per batch.", min=1)
    learning_rate: float = setting(2e-3, help="Adam learning rate.", min=0.0)
    dropout: float = setting(0.1, help="Dropout on embeddings and LSTM outputs.", min=0.0, max=0.9)
    grad_clip: float = setting(0.5, help="Gradient-norm clipping (0 disables).", min=0.0)
    eval_tokens: int = setting(50_000, help="At most this many tokens of each held-apart text are scored (perplexity).", min=100)
    device: str = setting("auto", help=_DEVICE_HELP, choices=_DEVICES, fingerprint=False)
    seed: int = setting(13, help="Random seed.")


@section
class GeneratorSection(Section):
    section_name: ClassVar[str] = "train_generator"
    level: str = setting("word", help="word (GiNZA surface tokens) or char.", choices=("word", "char"))
    min_count: int = setting(2, help="Vocabulary: words rarer than this become <unk>.", min=1)
    vocab_size: int = setting(
        0,
        help="Vocabulary besides the 4 specials: 0 = KNBC training words seen min_count times; N > 0 = the N most frequent "
        "surface words of KNBC's training sentences and the unlabelled corpus (tokenize.extra_corpora) counted together "
        "(min_count unused; fewer if the corpus has fewer distinct words). N > 0 needs init = pretrained and gives the model "
        "an adaptive softmax, which cannot share its weights with the embedding: tie_weights is then ignored (untied decoder).",
        min=0,
    )
    sequence_unit: str = setting(
        "article",
        help="Train on whole articles (the LSTM also sees the previous sentences) or on single sentences.",
        choices=("sentence", "article"),
    )
    bptt: int = setting(40, help="Truncated BPTT length in tokens (0 = whole sequences); the state still flows across chunks.", min=0)
    embedding_size: int = setting(256, help="Embedding dimensions.", min=1)
    embedding_init: str = setting("random", help="Initial embeddings.", choices=("random", "word2vec", "spacy", "imported"))
    hidden_size: int = setting(256, help="LSTM hidden units.", min=1)
    num_layers: int = setting(1, help="Stacked LSTM layers.", min=1, max=6)
    dropout: float = setting(0.5, help="Dropout on embeddings, between layers and before the decoder.", min=0.0, max=0.9)
    tie_weights: bool = setting(True, help="Share input and output embeddings (needs embedding_size == hidden_size).")
    theme_conditioning: bool = setting(True, help="Learn a theme embedding so generation can follow one theme.")
    theme_dropout: float = setting(
        0.25, help="Share of training sequences shown as 'any theme', so generation without --theme works too.", min=0.0, max=1.0
    )
    init: str = setting(
        "scratch",
        help="scratch, or pretrained: start from the language model of the pretrain_generator stage, then fine-tune on KNBC.",
        choices=("scratch", "pretrained"),
    )
    seeds: int = setting(
        5,
        help="Models trained (seed, seed+1, ...): the one kept is the median by dev perplexity; evaluation gives test mean and std over all.",
        min=1,
        max=50,
    )
    epochs: int = setting(12, help="Maximum epochs.", min=1)
    patience: int = setting(2, help="Early stopping: epochs without dev perplexity gain.", min=1)
    batch_size: int = setting(8, help="Sequences (articles or sentences) per batch.", min=1)
    learning_rate: float = setting(2e-3, help="Adam learning rate.", min=0.0)
    grad_clip: float = setting(0.5, help="Gradient-norm clipping (0 disables).", min=0.0)
    lr_decay: float = setting(0.5, help="Learning rate factor after an epoch without dev perplexity gain.", min=0.0, max=1.0)
    device: str = setting("auto", help=_DEVICE_HELP, choices=_DEVICES, fingerprint=False)
    amp: bool = setting(False, help="Mixed precision on GPU (ignored on CPU); off by default for the language model.", fingerprint=False)
    seed: int = setting(13, help="Random seed.")

    def check(self) -> None:
        if self.vocab_size > 0 and self.init != "pretrained":
            raise ConfigError(
                "E108",
                f"train_generator.vocab_size = {self.vocab_size} needs init = pretrained: a model trained from scratch on KNBC "
                "alone cannot learn the corpus's words.",
                hint='Set train_generator.init = "pretrained" (the pretrain_generator stage), or train_generator.vocab_size = 0.',
            )
        if self.tie_weights and self.vocab_size == 0 and self.embedding_size != self.hidden_size:
            raise ConfigError(
                "E108",
                f"train_generator.tie_weights needs embedding_size == hidden_size (got {self.embedding_size} and {self.hidden_size}).",
                hint="Set train_generator.embedding_size and train_generator.hidden_size equal, or train_generator.tie_weights = false.",
            )
        if self.init == "pretrained" and self.level != "word":
            raise ConfigError(
                "E108",
                "train_generator.init = pretrained needs level = word (the pretraining text is read as words).",
                hint='Set train_generator.level = "word", or train_generator.init = "scratch".',
            )

    def unfingerprinted(self) -> tuple[str, ...]:
        # a scratch, single-seed generator with the KNBC vocabulary keeps the fingerprint of before these keys existed
        return (
            *(("init",) if self.init == "scratch" else ()),
            *(("seeds",) if self.seeds == 1 else ()),
            *(("vocab_size",) if self.vocab_size == 0 else ()),
        )


@section
class EvaluateClassifiersSection(Section):
    section_name: ClassVar[str] = "evaluate_classifiers"
    svm_c: float = setting(1.0, help="Regularisation C of the TF-IDF linear SVM baseline.", min=0.0)
    svm_class_weight: str = setting("balanced", help="Class weights of the TF-IDF SVM baseline.", choices=("balanced", "none"))
    device: str = setting(
        "auto", help="Where the BiLSTM models are evaluated: auto (CUDA when present), cpu or cuda.", choices=_DEVICES, fingerprint=False
    )
    seed: int = setting(13, help="Random seed of the baselines.")


@section
class EvaluateGeneratorSection(Section):
    section_name: ClassVar[str] = "evaluate_generator"
    ngram_order: int = setting(3, help="Order of the n-gram baseline language model.", min=1, max=6)
    ngram_smoothing: str = setting("kneser_ney", help="n-gram smoothing.", choices=("kneser_ney", "witten_bell"))
    ngram_discount: float = setting(0.75, help="Kneser-Ney discount (nltk's default 0.1 is far below the usual 0.75).", min=0.0, max=1.0)
    num_samples: int = setting(5, help="Generated samples stored in the report.", min=0)
    seed: int = setting(13, help="Random seed of the samples.")


@section
class ExtractorSection(Section):
    """Seq2seq opinion (評判) extractor: BiLSTM encoder over GiNZA surface tokens, LSTM decoder with
    additive attention and copy. Sizes kept small so that a run takes minutes on a 2-core CPU."""

    section_name: ClassVar[str] = "train_extractor"
    min_count: int = setting(1, help="Source vocabulary: training-split words seen at least this often.", min=1)
    target_min_count: int = setting(
        2, help="Target vocabulary: output words seen at least this often in training; rarer ones are copied from the input.", min=1
    )
    embedding_dim: int = setting(128, help="Embedding size (source and target, randomly initialised).", min=1)
    hidden_size: int = setting(128, help="LSTM units (encoder: per direction; decoder).", min=1)
    attention_size: int = setting(128, help="Hidden size of the additive attention scorer.", min=1)
    dropout: float = setting(0.3, help="Dropout on embeddings and before the output layer.", min=0.0, max=0.9)
    copy: bool = setting(True, help="Pointer-generator copy from the input (off: the decoder can only write its vocabulary).")
    scheduled_sampling: bool = setting(True, help="Feed the decoder its own predictions on a share of the steps (see sampling_max).")
    sampling_max: float = setting(0.25, help="Largest share of decoder inputs taken from the model's own predictions.", min=0.0, max=1.0)
    sampling_warmup: int = setting(2, help="Epochs of pure teacher forcing before scheduled sampling starts.", min=0)
    sampling_ramp: int = setting(4, help="Epochs over which the sampling share rises linearly to sampling_max.", min=1)
    max_tokens: int = setting(100, help="Input tokens the model reads at once: `jpipe extract` windows longer sentences.", min=4)
    max_output_tokens: int = setting(128, help="Longest decoded output (tokens).", min=4)
    epochs: int = setting(20, help="Maximum training epochs.", min=1)
    patience: int = setting(4, help="Early stopping: epochs without gain of dev record F1 + expression F1.", min=1)
    batch_size: int = setting(32, help="Sentences per batch.", min=1)
    learning_rate: float = setting(2e-3, help="AdamW learning rate.", min=0.0)
    weight_decay: float = setting(0.0, help="AdamW weight decay.", min=0.0)
    grad_clip: float = setting(1.0, help="Gradient-norm clipping (0 disables).", min=0.0)
    device: str = setting("auto", help=_DEVICE_HELP, choices=_DEVICES, fingerprint=False)
    amp: bool = setting(False, help="Mixed precision on GPU (ignored on CPU).", fingerprint=False)
    seed: int = setting(13, help="Random seed.")
    seeds: int = setting(
        5,
        help="Models trained (seed, seed+1, ...): the one kept is the median by dev record F1 + expression F1; evaluation gives test mean and std over all.",
        min=1,
    )


@section
class EvaluateExtractorSection(Section):
    section_name: ClassVar[str] = "evaluate_extractor"
    beam: int = setting(5, help="Beam size of the reported seq2seq decoding (1 = greedy).", min=1, max=32)
    ablations: bool = setting(
        False, help="Also train and report copy off and scheduled sampling off (one model per train_extractor seed each)."
    )
    svm_c: float = setting(1.0, help="Regularisation C of baseline (a)'s TF-IDF linear type classifier.", min=0.0)
    tagger_epochs: int = setting(8, help="Epochs of baseline (b)'s BiLSTM BIO tagger.", min=1)
    device: str = setting("auto", help=_DEVICE_HELP, choices=_DEVICES, fingerprint=False)


@section
class ServeSection(Section):
    """``jpipe serve``: request limits, micro-batching of classify, threads. How the service runs, never what a model outputs."""

    section_name: ClassVar[str] = "serve"
    max_body_bytes: int = setting(1_048_576, help="Largest request body in bytes (413 above it).", min=1024, fingerprint=False)
    max_texts: int = setting(256, help="Texts per classify request (413 above it).", min=1, max=100_000, fingerprint=False)
    max_chars: int = setting(10_000, help="Characters per text: a longer text gets a per-row error.", min=1, fingerprint=False)
    max_generate_tokens: int = setting(200, help="Largest max_tokens of a generate request.", min=1, max=10_000, fingerprint=False)
    max_generate_num: int = setting(5, help="Largest num (texts) of a generate request.", min=1, max=100, fingerprint=False)
    max_topn: int = setting(100, help="Largest topn of similar and analogy requests.", min=1, max=10_000, fingerprint=False)
    max_pairs: int = setting(1000, help="Word pairs per similarity request.", min=1, max=100_000, fingerprint=False)
    max_batch_size: int = setting(
        64, help="Texts per classify forward pass: concurrent requests are merged up to this many.", min=1, max=4096, fingerprint=False
    )
    max_wait_ms: float = setting(
        2.0,
        help="Milliseconds a classify batch waits for more requests before it runs (0 = run at once).",
        min=0.0,
        max=1000.0,
        fingerprint=False,
    )
    max_queue: int = setting(
        4096, help="Texts waiting for a classify batch; beyond it requests get 503 (overloaded).", min=1, fingerprint=False
    )
    torch_threads: int = setting(
        1, help="Torch threads (0 = all cores but one; the other core parses requests and tokenizes).", min=0, max=256, fingerprint=False
    )
    shutdown_timeout_s: float = setting(30.0, help="On stop, seconds that requests in flight get to finish.", min=0.0, fingerprint=False)
    device: str = setting("cpu", help=_DEVICE_HELP, choices=_DEVICES, fingerprint=False)
    backend: str = setting(
        "torch",
        help="Classifier backend: torch, or onnx (each model's model.onnx from `jpipe export onnx`, run by ONNX Runtime on the CPU).",
        choices=("torch", "onnx"),
        fingerprint=False,
    )


@section
class TuneSection(Section):
    """``[tune]``: ``jpipe tune TASK``, the hyperparameter search of a task's classifier (the space itself is declared
    in ``pipeline.config.search_space``). How the search runs, never what a stage outputs: nothing is fingerprinted."""

    section_name: ClassVar[str] = "tune"
    params: list[str] = setting(
        [],
        help="The classifier keys searched (empty: every key of the search space: learning_rate, hidden_size, dropout, "
        "word_dropout, embedding_init, freeze_embeddings, init, batch_size, class_weights). The others keep their configured value.",
        fingerprint=False,
    )
    seed: int = setting(
        13,
        help="Seed of the TPE sampler (trial n samples with seed + n, so a resumed study repeats an uninterrupted one).",
        fingerprint=False,
    )
    pruner: str = setting(
        "median",
        help="Stops unpromising trials early on their dev macro-F1 per epoch: median (Optuna's MedianPruner), hyperband, or none.",
        choices=("median", "hyperband", "none"),
        fingerprint=False,
    )
    startup_trials: int = setting(
        5, help="Random trials before TPE models the results, and before the pruner prunes.", min=0, fingerprint=False
    )
    warmup_epochs: int = setting(2, help="Epochs a trial always trains before the pruner may stop it.", min=0, fingerprint=False)
    epochs: int = setting(0, help="Maximum epochs of a trial (0 = the classifier's epochs).", min=0, fingerprint=False)

    def check(self) -> None:
        from pipeline.config.search_space import check_params

        check_params(self.params)


@section
class TrackingSection(Section):
    """``[tracking]``: optional MLflow logging of each `jpipe run` and `jpipe tune` (``pip install 'jpipe[tracking]'``).
    Where results are logged, never what a stage outputs: nothing is fingerprinted."""

    section_name: ClassVar[str] = "tracking"
    mlflow_uri: str = setting(
        "",
        help='MLflow tracking URI each run is logged to (params, headline metrics, report files), e.g. "sqlite:///mlruns.db" '
        "(relative to the project); empty: no MLflow logging. The run history in .jpipe/history.db is kept either way.",
        fingerprint=False,
    )
    experiment: str = setting("jpipe", help="MLflow experiment the runs are logged to (created when missing).", fingerprint=False)


# Section name -> class, in the order of the pipeline (and of `jpipe config`).
SECTIONS: dict[str, type[Section]] = {
    cls.section_name: cls
    for cls in (
        CorpusSection,
        PrepareSection,
        TokenizeSection,
        Word2VecSection,
        SpacyVectorsSection,
        GinzaVectorsSection,
        CombinedVectorsSection,
        EvaluateVectorsSection,
        ClassifierSection,
        PretrainLMSection,
        GeneratorSection,
        EvaluateClassifiersSection,
        EvaluateGeneratorSection,
        ExtractorSection,
        EvaluateExtractorSection,
        ServeSection,
        TuneSection,
        TrackingSection,
    )
}
SCHEMA: dict[str, dict[str, Setting]] = {name: cls.settings() for name, cls in SECTIONS.items()}
