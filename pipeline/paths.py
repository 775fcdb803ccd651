"""The layout of a project directory: every path a stage reads or writes, relative to the project.

Plain constants with no imports, so every layer (data, text, vectors, training,
evaluation, workflow) can name the same files without importing the stage table.
"""

CORPUS_DIR = "data/corpus/KNBC_v1.0_090925_utf8"
CORPUS_MANIFEST = "data/corpus/manifest.json"
SENTENCES = "data/prepared/sentences.jsonl"
CORPUS_STATS = "data/prepared/stats.json"
TOKENS = "data/tokens/knbc.jsonl"
# The token store of tokenize.extra_corpora (pipeline.text.token_store).
EXTRA_TOKENS = "data/tokens/extra"
TOKENS_META = "data/tokens/meta.json"
VECTORS_DIR = "models/vectors"
WORD2VEC_DIR = f"{VECTORS_DIR}/word2vec"
SPACY_VECTORS_DIR = f"{VECTORS_DIR}/spacy"
IMPORTED_VECTORS_DIR = f"{VECTORS_DIR}/imported"
# ja_ginza's whole table (480k keys on 20k rows), exported once by the ginza_vectors stage.
GINZA_VECTORS_DIR = f"{VECTORS_DIR}/ginza"
# Several sources concatenated over the union of their keys (the combined_vectors stage).
COMBINED_VECTORS_DIR = f"{VECTORS_DIR}/combined"
VECTOR_SOURCES = {
    "word2vec": WORD2VEC_DIR,
    "spacy": SPACY_VECTORS_DIR,
    "imported": IMPORTED_VECTORS_DIR,
    "ginza": GINZA_VECTORS_DIR,
    "combined": COMBINED_VECTORS_DIR,
}
CLASSIFIERS_DIR = "models/classifier"
TASKS_DATA_DIR = "data/tasks"
TASKS_REPORT_DIR = "models/report/tasks"
LOCK_FILENAME = "jpipe.lock"  # what each stage read and wrote when it last ran (pipeline.workflow.lock)
GENERATOR_DIR = "models/generator"
SEEDS_DIR = "seeds"  # <model dir>/seeds/<seed>/: every seed's model directory when a stage trains several seeds
# The forward and backward language models of the pretrain_lm stage (classifier init = "pretrained").
PRETRAINED_LM_DIR = "models/pretrained_lm"
TARGET_LM_DIR = "models/target_lm"  # <task>/: the LMs fine-tuned on a task's training texts (ULMFiT step b)
# The generator's language model pretrained on the unlabelled text (train_generator init = "pretrained").
PRETRAINED_GENERATOR_DIR = "models/pretrained_generator"
EXTRACTOR_DIR = "models/extractor"
REPORT_DIR = "models/report"
VECTORS_REPORT = f"{REPORT_DIR}/vectors.json"
VECTORS_MAP = f"{REPORT_DIR}/vectors_map.png"
VECTORS_COVERAGE_TABLE = f"{REPORT_DIR}/vectors_coverage.md"
CLASSIFIERS_REPORT = f"{REPORT_DIR}/classifiers.json"
CLASSIFIERS_TABLE = f"{REPORT_DIR}/classifiers.md"  # the tasks' test rows, mean ± std over seeds
GENERATOR_REPORT = f"{REPORT_DIR}/generator.json"
GENERATOR_TABLE = f"{REPORT_DIR}/generator.md"  # test perplexities as mean ± std over seeds, beside the n-gram models
METRICS = f"{REPORT_DIR}/metrics.json"
EXTRACTOR_REPORT = f"{REPORT_DIR}/extractor.json"
EXTRACTOR_TABLE = f"{REPORT_DIR}/extractor.md"  # every system's test scores as mean ± std over seeds, with noise marks


def classifier_dir(task: str) -> str:
    """The model directory of task ``task`` (``models/classifier/<task>``)."""
    return f"{CLASSIFIERS_DIR}/{task}"


def target_lm_dir(task: str) -> str:
    """Stage ``finetune_lm_<task>``'s output: the forward and backward LMs after target-LM fine-tuning on the task."""
    return f"{TARGET_LM_DIR}/{task}"


def task_tokens(task: str) -> str:
    """The tokenized rows of a file task (``prepare_<task>``), laid out like ``data/tokens/knbc.jsonl``."""
    return f"{TASKS_DATA_DIR}/{task}/tokens.jsonl"


def task_stats(task: str) -> str:
    """Labels, label distribution per split and skipped rows of a file task."""
    return f"{TASKS_DATA_DIR}/{task}/stats.json"


def task_report_dir(task: str) -> str:
    """``evaluate_<task>``'s report: ``report.json``, ``confusion.png``, ``training.png``."""
    return f"{TASKS_REPORT_DIR}/{task}"
