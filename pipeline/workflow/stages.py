"""The stage table: what each stage reads, writes, which config section it uses, and its version.

Bump a stage's ``version`` when its code changes what it produces: every
project that ran the old version then sees the stage as stale.

Data flows one way: corpus -> prepare -> tokenize -> vectors -> models -> report.
"""

from __future__ import annotations

from pipeline.config import Config, load_config
from pipeline.data.tasks import lm_dir_for, task_rows_file, uses_target_lm
from pipeline.paths import (  # noqa: F401  (re-exported: the stage table names these paths)
    CLASSIFIERS_REPORT,
    CLASSIFIERS_TABLE,
    COMBINED_VECTORS_DIR,
    CORPUS_DIR,
    CORPUS_MANIFEST,
    CORPUS_STATS,
    EXTRA_TOKENS,
    EXTRACTOR_DIR,
    EXTRACTOR_REPORT,
    EXTRACTOR_TABLE,
    GENERATOR_DIR,
    GENERATOR_REPORT,
    GENERATOR_TABLE,
    GINZA_VECTORS_DIR,
    IMPORTED_VECTORS_DIR,
    METRICS,
    PRETRAINED_GENERATOR_DIR,
    PRETRAINED_LM_DIR,
    SENTENCES,
    SPACY_VECTORS_DIR,
    TOKENS,
    TOKENS_META,
    VECTOR_SOURCES,
    VECTORS_COVERAGE_TABLE,
    VECTORS_MAP,
    VECTORS_REPORT,
    WORD2VEC_DIR,
    classifier_dir,
    target_lm_dir,
    task_report_dir,
    task_stats,
    task_tokens,
)
from pipeline.workflow.stage import Stage


def _tokenize_inputs(config: Config) -> list[str]:
    return [SENTENCES, *config["tokenize"]["extra_corpora"]]


def _word2vec_inputs(config: Config) -> list[str]:
    return [TOKENS, EXTRA_TOKENS] if config["word2vec"]["use_extra_corpora"] else [TOKENS]


# Sources a combination can draw on: those a stage of this table builds before combined_vectors.
COMBINABLE_SOURCES = ("word2vec", "spacy", "ginza")


def _combined_inputs(config: Config) -> list[str]:
    from pipeline.errors import ConfigError

    sources = list(config["combined_vectors"]["sources"])
    unknown = [name for name in sources if name not in COMBINABLE_SOURCES]
    if unknown or len(set(sources)) < 2:
        raise ConfigError(
            "E104",
            f"combined_vectors.sources = {sources} must name two or more of {', '.join(COMBINABLE_SOURCES)}.",
            hint='Set combined_vectors.sources, for example ["ginza", "word2vec"].',
        )
    return [VECTOR_SOURCES[name] for name in dict.fromkeys(sources)]


def _vectors_input(source: str) -> list[str]:
    return [] if source == "random" else [VECTOR_SOURCES[source]]


# Model and vector stages also read data/tokens/meta.json (the split mode, for their model
# directories) without declaring it: it holds a timing and the extra-corpus counts, which change
# on every tokenize run and would defeat early cutoff; a new split mode always changes knbc.jsonl.
def _classifier_inputs(task: str):
    def inputs(config: Config) -> list[str]:
        rows = task_rows_file(config, task)
        stats = [] if config.task(task).is_knbc else [task_stats(task)]
        classifier = config.classifier_for(task)
        return [
            rows,
            *stats,
            *_vectors_input(classifier["embedding_init"]),
            *([lm_dir_for(config, task)] if classifier["init"] == "pretrained" else []),
        ]

    return inputs


# The [tasks.NAME.classifier] keys that shape target-LM fine-tuning (with [pretrain_lm]'s stream settings).
TARGET_LM_KEYS = ("target_lm_epochs", "target_lm_learning_rate", "freeze_embeddings", "seed")


def _finetune_lm_view(task: str):
    def view(config: Config) -> dict:
        classifier = config.classifier_for(task)
        own = {f"@pretrain_lm.{key}": value for key, value in config.fingerprint_view("pretrain_lm").items()}
        return {**{key: classifier[key] for key in TARGET_LM_KEYS}, **own}

    return view


def _task_files(task: str):
    def inputs(config: Config) -> list[str]:
        section = config.task(task)
        return [path for path in (section.data, section.dev_data, section.test_data) if path]

    return inputs


def _evaluate_inputs(task: str):
    def inputs(config: Config) -> list[str]:
        return [task_rows_file(config, task), classifier_dir(task)]

    return inputs


def _generator_inputs(config: Config) -> list[str]:
    pretrained = [PRETRAINED_GENERATOR_DIR] if generator_is_pretrained(config) else []
    return [TOKENS, *_vectors_input(config["train_generator"]["embedding_init"]), *pretrained]


def _evaluate_generator_inputs(config: Config) -> list[str]:
    # pretrained: the LM before fine-tuning is scored too, and an n-gram model on its training text
    pretrained = [PRETRAINED_GENERATOR_DIR, EXTRA_TOKENS] if generator_is_pretrained(config) else []
    return [TOKENS, GENERATOR_DIR, *pretrained]


def _pretrain_generator_inputs(config: Config) -> list[str]:
    return [TOKENS, EXTRA_TOKENS, *_vectors_input(config["train_generator"]["embedding_init"])]


# [pretrain_lm] keys that pretrain_generator does not read (its vocabulary and softmax are the generator's)
CLASSIFIER_LM_ONLY_KEYS = ("vocab_size", "min_count", "freeze_vectors", "adaptive_softmax")
GENERATOR_SHAPE_KEYS = ("min_count", "embedding_size", "embedding_init", "hidden_size", "num_layers", "tie_weights", "theme_conditioning")


def _pretrain_generator_view(config: Config) -> dict:
    """pretrain_generator's fingerprint: the [pretrain_lm] keys it reads and the [train_generator] keys of its shape."""
    generator = config["train_generator"]
    own = {key: value for key, value in config.fingerprint_view("pretrain_lm").items() if key not in CLASSIFIER_LM_ONLY_KEYS}
    # vocab_size only when set: at 0 (the KNBC vocabulary) the fingerprint is the one of before the key existed
    corpus_vocab = {"@train_generator.vocab_size": generator["vocab_size"]} if generator["vocab_size"] else {}
    return {**own, **{f"@train_generator.{key}": generator[key] for key in GENERATOR_SHAPE_KEYS}, **corpus_vocab}


def _pretrain_inputs(config: Config) -> list[str]:
    return [TOKENS, EXTRA_TOKENS, *_vectors_input(config["classifier"]["embedding_init"])]


def _pretrain_view(config: Config) -> dict:
    """pretrain_lm's fingerprint: its section and the [classifier] keys that shape the language models."""
    classifier = config["classifier"]
    shared = {f"@classifier.{key}": classifier[key] for key in ("token_field", "embedding_init", "embedding_dim", "hidden_size")}
    return {**config.fingerprint_view("pretrain_lm"), **shared}


# Stages that exist only under some config: what is missing, and how to turn them on.
INACTIVE_STAGES = {
    "pretrain_lm": (
        "no classifier has init = pretrained",
        'Set classifier.init = "pretrained" (all tasks) or tasks.NAME.classifier.init = "pretrained".',
    ),
    "pretrain_generator": ("train_generator.init is scratch", 'Set train_generator.init = "pretrained".'),
}


def generator_is_pretrained(config: Config) -> bool:
    """Whether the generator starts from pretrain_generator's LM (only then is that a stage of the run)."""
    return config["train_generator"]["init"] == "pretrained"


def uses_pretraining(config: Config) -> bool:
    """Whether a task's classifier starts from the pretrained LMs (only then is pretrain_lm a stage of the run)."""
    return any(config.classifier_for(task)["init"] == "pretrained" for task in config.task_names)


def _report_inputs(config: Config) -> list[str]:
    return [VECTORS_REPORT, *(task_report_dir(task) for task in config.task_names), GENERATOR_REPORT]


def _prepare_task_stage(task: str) -> Stage:
    return Stage(
        name=f"prepare_{task}",
        func="pipeline.text.task_data:prepare_task_stage",
        inputs=_task_files(task),
        outputs=(task_tokens(task), task_stats(task)),
        section=f"tasks.{task}",
        packages=("sudachipy", "sudachidict-core", "spacy"),
        task=task,
        config_view=lambda config: config.task_data_view(task),
        help=f"Validate task {task}'s labelled file, split it by group and tokenize it like the corpus.",
    )


def _finetune_lm_stage(task: str) -> Stage:
    return Stage(
        name=f"finetune_lm_{task}",
        func="pipeline.training.target_lm:finetune_lm_stage",
        inputs=lambda config: [task_rows_file(config, task), PRETRAINED_LM_DIR],
        outputs=(target_lm_dir(task),),
        section=f"tasks.{task}.classifier",
        task=task,
        config_view=_finetune_lm_view(task),
        help=f"ULMFiT step b: the pretrained forward and backward LMs fine-tuned on task {task}'s training texts.",
    )


def _train_task_stage(task: str) -> Stage:
    return Stage(
        name=f"train_{task}",
        func="pipeline.training.classifier:train_task_stage",
        inputs=_classifier_inputs(task),
        outputs=(classifier_dir(task),),
        section=f"tasks.{task}.classifier",
        version=2,  # 2: calibration.json (dev temperature) per published model; ensemble.json with ensemble = true
        task=task,
        help=f"BiLSTM + attention classifier of task {task}.",
    )


def _evaluate_task_stage(task: str) -> Stage:
    return Stage(
        name=f"evaluate_{task}",
        func="pipeline.evaluation.classifiers:evaluate_task_stage",
        inputs=_evaluate_inputs(task),
        outputs=(task_report_dir(task),),
        section="evaluate_classifiers",
        version=4,  # 4: test ECE / Brier before and after calibration, calibration.png, the ensemble row
        task=task,
        help=f"Test-split metrics of task {task} against majority and TF-IDF baselines; label distribution; plots.",
    )


def build_stages(config: Config | None = None) -> list[Stage]:
    """The stage table for ``config``: the fixed stages plus ``prepare_/train_/evaluate_<task>`` per enabled task.

    Order: corpus ... vectors, each file task's prepare, every task's training, the generator and
    the extractor, every task's evaluation, the generator's and the extractor's evaluation, the report.
    """
    config = config or load_config_defaults()
    tasks = config.task_names
    fixed = {stage.name: stage for stage in _FIXED}
    head = [
        fixed[name]
        for name in ("corpus", "prepare", "tokenize", "word2vec", "spacy_vectors", "ginza_vectors", "combined_vectors", "evaluate_vectors")
    ]
    # pretrain_lm only when a classifier needs it: the default run's time and results stay as they were.
    pretrain = [fixed["pretrain_lm"]] if uses_pretraining(config) else []
    pretrain += [fixed["pretrain_generator"]] if generator_is_pretrained(config) else []
    return [
        *head,
        *pretrain,
        *(_prepare_task_stage(task) for task in tasks if not config.task(task).is_knbc),
        *(_finetune_lm_stage(task) for task in tasks if uses_target_lm(config, task)),
        *(_train_task_stage(task) for task in tasks),
        fixed["train_generator"],
        fixed["train_extractor"],
        *(_evaluate_task_stage(task) for task in tasks),
        fixed["evaluate_generator"],
        fixed["evaluate_extractor"],
        fixed["report"],
    ]


def load_config_defaults() -> Config:
    """The default config (no project file): the built-in KNBC tasks."""
    return load_config("/nonexistent-jpipe-project")


_FIXED: list[Stage] = [
    Stage(
        name="corpus",
        func="pipeline.data.knbc.fetch:corpus_stage",
        outputs=(CORPUS_DIR, CORPUS_MANIFEST),
        section="corpus",
        help="Download or copy KNBC, extract it safely, verify 249 articles / 4,186 sentences.",
    ),
    Stage(
        name="prepare",
        func="pipeline.data.knbc.prepare:prepare_stage",
        inputs=(CORPUS_MANIFEST,),
        outputs=(SENTENCES, CORPUS_STATS),
        section="prepare",
        help="Parse corpus1 (KNP) and corpus2 (評判) into one sentence table with labels and article splits.",
    ),
    Stage(
        name="tokenize",
        func="pipeline.text.tokenize:tokenize_stage",
        inputs=_tokenize_inputs,
        outputs=(TOKENS, EXTRA_TOKENS, TOKENS_META),
        section="tokenize",
        version=2,  # 2: the extra corpora go into the token store data/tokens/extra/ (was extra.jsonl)
        packages=("sudachipy", "sudachidict-core", "spacy"),
        help="GiNZA/Sudachi tokens of every KNBC sentence; the extra corpora into a token store (parallel, resumable).",
    ),
    Stage(
        name="word2vec",
        func="pipeline.vectors.word2vec:word2vec_stage",
        inputs=_word2vec_inputs,
        outputs=(WORD2VEC_DIR,),
        section="word2vec",
        version=2,  # 2: streams the token store; epochs and workers 0 = auto
        help="Train gensim Word2Vec on the tokens.",
    ),
    Stage(
        name="spacy_vectors",
        func="pipeline.vectors.spacy_vectors:spacy_vectors_stage",
        inputs=(TOKENS,),
        outputs=(SPACY_VECTORS_DIR,),
        section="spacy_vectors",
        packages=("ja-ginza",),
        help="Embedding table for the corpus vocabulary from ja_ginza's static vectors.",
    ),
    Stage(
        name="ginza_vectors",
        func="pipeline.vectors.spacy_vectors:ginza_vectors_stage",
        outputs=(GINZA_VECTORS_DIR,),
        section="ginza_vectors",
        packages=("ja-ginza",),
        help="ja_ginza's whole vector table (480k keys on 20k rows) as a memory-mapped store for similarity queries.",
    ),
    Stage(
        name="combined_vectors",
        func="pipeline.vectors.combine:combined_vectors_stage",
        inputs=_combined_inputs,
        outputs=(COMBINED_VECTORS_DIR,),
        section="combined_vectors",
        help="Sources concatenated over the union of their keys (ginza + word2vec); evaluate_vectors says on dev whether it wins.",
    ),
    Stage(
        name="evaluate_vectors",
        func="pipeline.evaluation.vectors:evaluate_vectors_stage",
        inputs=(TOKENS, WORD2VEC_DIR, SPACY_VECTORS_DIR),
        # Evaluated (and fingerprinted) when they exist; `jpipe run` builds ginza and combined first.
        optional_inputs=(IMPORTED_VECTORS_DIR, GINZA_VECTORS_DIR, COMBINED_VECTORS_DIR),
        outputs=(VECTORS_REPORT, VECTORS_MAP, VECTORS_COVERAGE_TABLE),
        section="evaluate_vectors",
        version=2,
        help="Synonym coverage and ROC-AUC of every vector source on fixed dev/test halves; neighbour precision; 2-D word map.",
    ),
    Stage(
        name="pretrain_lm",
        func="pipeline.training.pretrain:pretrain_lm_stage",
        inputs=_pretrain_inputs,
        outputs=(PRETRAINED_LM_DIR,),
        section="pretrain_lm",
        config_view=_pretrain_view,
        help="Forward and backward LSTM language models on KNBC's training articles and the unlabelled corpora (classifier init = pretrained).",
    ),
    Stage(
        name="pretrain_generator",
        func="pipeline.training.pretrain_generator:pretrain_generator_stage",
        inputs=_pretrain_generator_inputs,
        outputs=(PRETRAINED_GENERATOR_DIR,),
        section="pretrain_lm",
        config_view=_pretrain_generator_view,
        help="The generator's LSTM language model on KNBC's training articles and the unlabelled corpora (train_generator init = pretrained).",
    ),
    Stage(
        name="train_generator",
        func="pipeline.training.language_model:train_generator_stage",
        inputs=_generator_inputs,
        outputs=(GENERATOR_DIR,),
        section="train_generator",
        help="LSTM language model for text generation.",
    ),
    Stage(
        name="train_extractor",
        func="pipeline.training.extractor:train_extractor_stage",
        # the tokens file has no 評判 annotations: they come from the prepared sentences (by sentence_id)
        inputs=(TOKENS, SENTENCES),
        outputs=(EXTRACTOR_DIR,),
        section="train_extractor",
        version=2,  # 2: packed teacher forcing (about half the time per epoch); one model per seed
        help="Seq2seq opinion (評判) extractor: BiLSTM encoder, LSTM decoder with additive attention and copy.",
    ),
    Stage(
        name="evaluate_generator",
        func="pipeline.evaluation.generator:evaluate_generator_stage",
        inputs=_evaluate_generator_inputs,
        outputs=(GENERATOR_REPORT, GENERATOR_TABLE),
        section="evaluate_generator",
        version=2,  # 2: every seed scored (mean ± std), generator.md; init = pretrained adds the pretraining rows
        help="Test perplexity of the LSTM against an n-gram baseline; samples.",
    ),
    Stage(
        name="evaluate_extractor",
        func="pipeline.evaluation.extractor:evaluate_extractor_stage",
        inputs=(TOKENS, SENTENCES, EXTRACTOR_DIR),
        outputs=(EXTRACTOR_REPORT, EXTRACTOR_TABLE),
        section="evaluate_extractor",
        version=3,  # 2: every seed train_extractor trained; comparisons with noise marks; extractor.md; 3: overlap scores
        help="Opinion extraction on the test articles: seq2seq against TF-IDF + last predicate and BIO-tagger baselines.",
    ),
    Stage(
        name="report",
        func="pipeline.evaluation.report:report_stage",
        inputs=_report_inputs,
        outputs=(METRICS, CLASSIFIERS_REPORT, CLASSIFIERS_TABLE),
        version=4,  # 4: classifiers.md gains each task's test ECE / Brier before and after calibration, and the ensemble row
        help="Merge every evaluation into models/report/metrics.json (tasks also into classifiers.json and classifiers.md).",
        optional_inputs=(EXTRACTOR_REPORT,),  # merged when the extractor was evaluated
    ),
]

# The table of the default config (the built-in tasks): for help texts and tests.
STAGES: list[Stage] = build_stages()
STAGE_NAMES = [stage.name for stage in STAGES]
