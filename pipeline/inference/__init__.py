"""Using trained models: everything loads from a self-contained model directory.

* ``classifier``: :class:`Classifier` (one model directory -> labels, probabilities, attention; int8);
* ``generator``: :class:`Generator` (one model directory -> text, seeded);
* ``batch``: several task classifiers over streamed input rows, JSONL/CSV output (``jpipe classify``);
* ``explain``: per-token attention of one text and its HTML heatmap (``jpipe explain``).
"""
