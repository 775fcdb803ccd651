"""Neural models and their training loops. Imports only torch, numpy and this package,
so training runs on a GPU machine that has no spaCy or gensim."""
