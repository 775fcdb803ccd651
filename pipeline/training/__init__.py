"""Training: ONE loop (``loop``) for every model, the per-model parts (``classifier``, ``language_model``),
checkpoints and epoch logs (``checkpoint``), and how stages read vectors and publish model directories (``stage_io``)."""
