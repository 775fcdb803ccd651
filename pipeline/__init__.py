"""jpipe: a staged Japanese NLP pipeline on the KNB blog corpus (KNBC).

corpus -> prepare -> tokenize -> vectors -> models -> report and queries.
Heavy libraries (torch, spaCy, gensim) are imported lazily, inside the
functions that need them, so the CLI and queries stay fast.
"""

__version__ = "0.1.0"
