"""The layout of a project directory: every path a stage reads or writes, relative to the project.

Plain constants with no imports, so every layer (data, text, vectors, training,
evaluation, workflow) can name the same files without importing the stage table.
"""

CORPUS_DIR = "data/corpus/KNBC_v1.0_090925_utf8"
CORPUS_MANIFEST = "data/corpus/manifest.json"
SENTENCES = "data/prepared/sentences.jsonl"
CORPUS_STATS = "data/prepared/stats.json"
TOKENS = "data/tokens/knbc.jsonl"
EXTRA_TOKENS = "data/tokens/extra.jsonl"
TOKENS_META = "data/tokens/meta.json"
VECTORS_DIR = "models/vectors"
WORD2VEC_DIR = f"{VECTORS_DIR}/word2vec"
SPACY_VECTORS_DIR = f"{VECTORS_DIR}/spacy"
IMPORTED_VECTORS_DIR = f"{VECTORS_DIR}/imported"
VECTOR_SOURCES = {"word2vec": WORD2VEC_DIR, "spacy": SPACY_VECTORS_DIR, "imported": IMPORTED_VECTORS_DIR}
CLASSIFIER_DIRS = {"topic": "models/classifier/topic", "sentiment": "models/classifier/sentiment"}
GENERATOR_DIR = "models/generator"
EXTRACTOR_DIR = "models/extractor"
REPORT_DIR = "models/report"
VECTORS_REPORT = f"{REPORT_DIR}/vectors.json"
VECTORS_MAP = f"{REPORT_DIR}/vectors_map.png"
CLASSIFIERS_REPORT = f"{REPORT_DIR}/classifiers.json"
CLASSIFIERS_FIGURES = f"{REPORT_DIR}/classifiers"
GENERATOR_REPORT = f"{REPORT_DIR}/generator.json"
METRICS = f"{REPORT_DIR}/metrics.json"
EXTRACTOR_REPORT = f"{REPORT_DIR}/extractor.json"
