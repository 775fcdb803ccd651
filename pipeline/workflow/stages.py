"""The stage table: what each stage reads, writes, which config section it uses, and its version.

Bump a stage's ``version`` when its code changes what it produces: every
project that ran the old version then sees the stage as stale.

Data flows one way: corpus -> prepare -> tokenize -> vectors -> models -> report.
"""

from __future__ import annotations

from pipeline.config import Config
from pipeline.paths import (  # noqa: F401  (re-exported: the stage table names these paths)
    CLASSIFIER_DIRS,
    CLASSIFIERS_FIGURES,
    CLASSIFIERS_REPORT,
    CORPUS_DIR,
    CORPUS_MANIFEST,
    CORPUS_STATS,
    EXTRA_TOKENS,
    EXTRACTOR_DIR,
    EXTRACTOR_REPORT,
    GENERATOR_DIR,
    GENERATOR_REPORT,
    IMPORTED_VECTORS_DIR,
    METRICS,
    SENTENCES,
    SPACY_VECTORS_DIR,
    TOKENS,
    TOKENS_META,
    VECTOR_SOURCES,
    VECTORS_MAP,
    VECTORS_REPORT,
    WORD2VEC_DIR,
)
from pipeline.workflow.stage import Stage


def _tokenize_inputs(config: Config) -> list[str]:
    return [SENTENCES, *config["tokenize"]["extra_corpora"]]


def _word2vec_inputs(config: Config) -> list[str]:
    return [TOKENS, EXTRA_TOKENS] if config["word2vec"]["use_extra_corpora"] else [TOKENS]


def _vectors_input(source: str) -> list[str]:
    return [] if source == "random" else [VECTOR_SOURCES[source]]


# Model and vector stages also read data/tokens/meta.json (the split mode, for their model
# directories) without declaring it: it holds a timing and the extra-corpus counts, which change
# on every tokenize run and would defeat early cutoff; a new split mode always changes knbc.jsonl.
def _classifier_inputs(task: str):
    def inputs(config: Config) -> list[str]:
        return [TOKENS, *_vectors_input(config[f"train_{task}"]["embedding_init"])]

    return inputs


def _generator_inputs(config: Config) -> list[str]:
    return [TOKENS, *_vectors_input(config["train_generator"]["embedding_init"])]


STAGES: list[Stage] = [
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
        packages=("sudachipy", "sudachidict-core", "spacy"),
        help="GiNZA/Sudachi tokens (surface, lemma, normalized form, UD POS, Sudachi tag) for every sentence.",
    ),
    Stage(
        name="word2vec",
        func="pipeline.vectors.word2vec:word2vec_stage",
        inputs=_word2vec_inputs,
        outputs=(WORD2VEC_DIR,),
        section="word2vec",
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
        name="evaluate_vectors",
        func="pipeline.evaluation.vectors:evaluate_vectors_stage",
        inputs=(TOKENS, WORD2VEC_DIR, SPACY_VECTORS_DIR),
        optional_inputs=(IMPORTED_VECTORS_DIR,),
        outputs=(VECTORS_REPORT, VECTORS_MAP),
        section="evaluate_vectors",
        help="Synonym ROC-AUC, neighbour precision and coverage of each vector source; 2-D word map.",
    ),
    Stage(
        name="train_topic",
        func="pipeline.training.classifier:train_topic_stage",
        inputs=_classifier_inputs("topic"),
        outputs=(CLASSIFIER_DIRS["topic"],),
        section="train_topic",
        help="BiLSTM + attention topic classifier (Gourmet / Keitai / Kyoto / Sports).",
    ),
    Stage(
        name="train_sentiment",
        func="pipeline.training.classifier:train_sentiment_stage",
        inputs=_classifier_inputs("sentiment"),
        outputs=(CLASSIFIER_DIRS["sentiment"],),
        section="train_sentiment",
        help="BiLSTM + attention sentiment classifier (positive / negative / neutral).",
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
        help="Seq2seq opinion (評判) extractor: BiLSTM encoder, LSTM decoder with additive attention and copy.",
    ),
    Stage(
        name="evaluate_classifiers",
        func="pipeline.evaluation.classifiers:evaluate_classifiers_stage",
        inputs=(TOKENS, CLASSIFIER_DIRS["topic"], CLASSIFIER_DIRS["sentiment"]),
        outputs=(CLASSIFIERS_REPORT, CLASSIFIERS_FIGURES),
        section="evaluate_classifiers",
        help="Test-split metrics of both classifiers against majority and TF-IDF baselines; plots.",
    ),
    Stage(
        name="evaluate_generator",
        func="pipeline.evaluation.generator:evaluate_generator_stage",
        inputs=(TOKENS, GENERATOR_DIR),
        outputs=(GENERATOR_REPORT,),
        section="evaluate_generator",
        help="Test perplexity of the LSTM against an n-gram baseline; samples.",
    ),
    Stage(
        name="evaluate_extractor",
        func="pipeline.evaluation.extractor:evaluate_extractor_stage",
        inputs=(TOKENS, SENTENCES, EXTRACTOR_DIR),
        outputs=(EXTRACTOR_REPORT,),
        section="evaluate_extractor",
        help="Opinion extraction on the test articles: seq2seq against TF-IDF + last predicate and BIO-tagger baselines.",
    ),
    Stage(
        name="report",
        func="pipeline.evaluation.report:report_stage",
        inputs=(VECTORS_REPORT, CLASSIFIERS_REPORT, GENERATOR_REPORT),
        optional_inputs=(EXTRACTOR_REPORT,),  # merged when the extractor was evaluated
        outputs=(METRICS,),
        help="Merge every evaluation into models/report/metrics.json.",
    ),
]

STAGE_NAMES = [stage.name for stage in STAGES]
