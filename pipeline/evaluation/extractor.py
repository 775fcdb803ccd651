"""Stage ``evaluate_extractor``: the seq2seq opinion extractor on the KNBC test articles, against two baselines.

Systems, all trained on the training split only (the test split is never used for choices):

* ``seq2seq``: the model of ``models/extractor`` (seed ``train_extractor.seed``), decoded with beam
  ``evaluate_extractor.beam`` (and greedy, ``seq2seq_greedy``); with ``seeds`` > 1 the next seeds
  are trained here with the same settings, and every figure is the mean and std over seeds;
* ``baseline_a``: TF-IDF char 1-3-grams + LinearSVC predicting the sentence's first evaluation type
  or "none"; the expression is the last predicate of the sentence, approximated on the GiNZA tokens
  as the last VERB / ADJ token up to the end of the sentence (its bunsetsu's function words); target: the
  noun run before the sentence's first は / が (``topic_phrase``), for baseline (b) too;
* ``baseline_b``: a BiLSTM BIO tagger (``pipeline.models.tagger``) for expression spans; each span's
  type from TF-IDF + LinearSVC on the span and its sentence;
* with ``ablations``: ``seq2seq_no_copy`` and ``seq2seq_no_scheduled_sampling`` (trained here).

Scores (``pipeline.metrics.opinion_scores``, one code path for every system): record / expression / target
precision-recall-F1, expression token-level F1, type accuracy on matched expressions, "no opinion" precision /
recall; and the overlap scores (``pipeline.metrics.overlap_scores``): expression and target overlap F1 (spans
sharing >= 50 % of their union's characters, paired one-to-one greedily by overlap), polarity and type accuracy
on the overlap-matched expressions, per-type gold / predicted / matched / correct counts.
Output: ``models/report/extractor.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.data.opinions import covering_tokens, find_span, token_offsets

logger = logging.getLogger(__name__)

NONE = "none"
_PREDICATE_POS = ("VERB", "ADJ")
_REPORTED = (
    "record_f1",
    "record_precision",
    "record_recall",
    "typed_expression_f1",
    "expression_f1",
    "expression_tokens_f1",
    "type_accuracy",
    "target_f1",
    "no_opinion_precision",
    "no_opinion_recall",
    "expression_overlap_f1",
    "expression_overlap_precision",
    "expression_overlap_recall",
    "target_overlap_f1",
    "polarity_accuracy",
    "type_accuracy_overlap",
)
_COMPARED = (
    "record_f1",
    "typed_expression_f1",
    "expression_f1",
    "expression_tokens_f1",
    "target_f1",
    "expression_overlap_f1",
    "target_overlap_f1",
    "polarity_accuracy",
    "type_accuracy_overlap",
)
_TYPE_COUNTS = ("gold", "predicted", "matched", "correct")


# ------------------------------------------------------------------ scoring
def with_tokens(records: list[dict], *, text: str, tokens: list[str]) -> list[dict]:
    """Records with ``tokens``: the indices of the sentence tokens their expression covers (for token-level F1),
    and ``expression_span`` / ``target_span`` in the sentence (for the overlap scores; kept when already set)."""
    offsets = token_offsets(text, tokens)
    result = []
    for record in records:
        span = record.get("expression_span") or find_span(text, record["expression"])
        covered = covering_tokens(offsets, span) if span else None
        target_span = record.get("target_span") or find_span(text, record.get("target") or "")
        result.append({**record, "tokens": tuple(range(*covered)) if covered else (), "expression_span": span, "target_span": target_span})
    return result


def score(examples, predicted: list[list[dict]]) -> dict[str, Any]:
    from pipeline.metrics import opinion_scores

    gold = [with_tokens(e.records, text=e.text, tokens=e.tokens) for e in examples]
    guesses = [with_tokens(p, text=e.text, tokens=e.tokens) for e, p in zip(examples, predicted, strict=True)]
    return opinion_scores(gold=gold, predicted=guesses)


def mean_std(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and (population) std over seeds of every reported score, plus the per-seed values."""
    from pipeline.metrics import mean_std as spread

    result: dict[str, Any] = {"seeds": len(runs)}
    for key in _REPORTED:
        mean, std = spread(run[key] for run in runs)
        result[key], result[f"{key}_std"] = round(mean, 4), round(std, 4)
    result["per_seed"] = [{key: round(run[key], 4) for key in ("seed", *_REPORTED)} for run in runs]
    result["type_counts"] = mean_type_counts(runs)
    return result


def mean_type_counts(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per type: the gold / predicted / matched / correct counts (``opinion_scores``' ``type_counts``), mean over seeds."""
    kinds = sorted({kind for run in runs for kind in run.get("type_counts", {})})
    return {
        kind: {key: round(sum(run.get("type_counts", {}).get(kind, {}).get(key, 0) for run in runs) / len(runs), 1) for key in _TYPE_COUNTS}
        for kind in kinds
    }


def comparisons(report: dict[str, Any], *, reference: str = "seq2seq") -> dict[str, dict[str, Any]]:
    """Every other system against ``reference`` on the compared scores: difference of the means, the
    larger of the two seed spreads, and whether the difference is within it (``pipeline.metrics.within_noise``)."""
    from pipeline.metrics import within_noise

    base = report[reference]
    result = {}
    for name in (n for n in report if isinstance(report[n], dict) and "per_seed" in report[n] and n != reference):
        other = report[name]
        result[name] = {
            key: {
                "difference": round(base[key] - other[key], 4),
                "spread": max(base[f"{key}_std"], other[f"{key}_std"]),
                "within_noise": within_noise(mean_a=base[key], std_a=base[f"{key}_std"], mean_b=other[key], std_b=other[f"{key}_std"]),
            }
            for key in _COMPARED
        }
    return result


# --------------------------------------------------------------- baseline a
def last_predicate(text: str, tokens: list[str], pos: list[str]) -> str:
    """The last VERB / ADJ token and the tokens after it, without trailing punctuation: the last predicate bunsetsu, roughly."""
    index = max((i for i, p in enumerate(pos) if p in _PREDICATE_POS), default=None)
    if index is None:
        return ""
    end = len(tokens)
    while end > index + 1 and pos[end - 1] in ("PUNCT", "SYM"):
        end -= 1
    return "".join(tokens[index:end])


def topic_phrase(tokens: list[str], pos: list[str]) -> str:
    """The target guess of both baselines: the noun run right before the first は / が (the topic or subject), else ""."""
    for index, token in enumerate(tokens):
        if token in ("は", "が") and pos[index] == "ADP":
            start = index
            while start > 0 and pos[start - 1] in ("NOUN", "PROPN"):
                start -= 1
            return "".join(tokens[start:index])
    return ""


def _type_classifier(texts: list[str], labels: list[str], *, c: float, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True), LinearSVC(C=c, class_weight="balanced", random_state=seed)
    )
    return model.fit(texts, labels)


def baseline_a(train, test, *, pos: dict[str, list[str]], c: float, seed: int) -> list[list[dict]]:
    labels = [e.records[0]["type"] if e.records else NONE for e in train]
    model = _type_classifier([e.text for e in train], labels, c=c, seed=seed)
    predicted = []
    for example, label in zip(test, model.predict([e.text for e in test]), strict=True):
        expression = last_predicate(example.text, example.tokens, pos[example.sentence_id])
        if label == NONE or not expression:
            predicted.append([])
            continue
        target = topic_phrase(example.tokens, pos[example.sentence_id])
        predicted.append([{"type": str(label), "expression": expression, "target": target, "polarity": None}])
    return predicted


# --------------------------------------------------------------- baseline b
def baseline_b(
    train, dev, test, *, pos: dict[str, list[str]], c: float, seed: int, epochs: int, work_dir: Path, device
) -> list[list[dict]]:
    """BIO tagger spans, each typed by TF-IDF + LinearSVC on "expression | sentence" (trained on the gold records)."""
    from pipeline.training.tagger import tagged_expressions, train_tagger

    tagger, _ = train_tagger(train_examples=train, dev_examples=dev, seed=seed, epochs=epochs, work_dir=work_dir, device=device)
    pairs = [(f"{r['expression']}|{e.text}", r["type"]) for e in train for r in e.records]
    typer = _type_classifier([p[0] for p in pairs], [p[1] for p in pairs], c=c, seed=seed)
    spans = tagged_expressions(tagger, test)
    queries = [f"{expression}|{e.text}" for e, found in zip(test, spans, strict=True) for _, _, expression in found]
    types = iter(typer.predict(queries).tolist() if queries else [])
    return [
        [
            {"type": next(types), "expression": expression, "target": topic_phrase(e.tokens, pos[e.sentence_id]), "polarity": None}
            for _, _, expression in found
        ]
        for e, found in zip(test, spans, strict=True)
    ]


# ------------------------------------------------------------------ seq2seq
def seq2seq_predictions(model, data, section: dict, examples, *, beam: int, device) -> list[list[dict]]:
    from pipeline.training.extractor import decode_examples, encode_examples

    encoded = encode_examples(examples, data, section)
    return decode_examples(
        model, examples, encoded, target_vocab=data.target_vocab, max_length=section["max_output_tokens"], device=device, beam=beam
    )


def train_variant(section: dict, data, *, work_dir: Path, **changes):
    """A seq2seq model trained here with ``changes`` to the train_extractor settings (another seed, copy off, ...)."""
    from pipeline.training.extractor import train_extractor

    settings = {**dict(section), **changes}
    name = "-".join(f"{key}={value}" for key, value in sorted(changes.items()))
    trained = train_extractor(section=settings, data=data, work_dir=work_dir / name, resume=False, signature=name)
    return trained.model


def trained_seeds(model_dir: Path, *, seed: int) -> list[tuple[int, Path]]:
    """(seed, model directory) of every seed train_extractor trained: its ``seeds/<seed>/``, or the model itself for one seed."""
    from pipeline.models.model_dir import seed_model_dirs

    return [(int(directory.name), directory) for directory in seed_model_dirs(model_dir)] or [(seed, model_dir)]


def seq2seq_systems(ctx, data, test, *, seeds: list[tuple[int, Path]], device) -> dict[str, list[dict]]:
    """Scores of the seq2seq variants, one run per trained seed each (ablations: trained here, per seed)."""
    from pipeline.models.seq2seq import Seq2SeqExtractor

    train_section, section = ctx.config["train_extractor"], ctx.section
    runs: dict[str, list[dict]] = {"seq2seq": [], "seq2seq_greedy": []}
    if section["ablations"]:
        runs.update(seq2seq_no_copy=[], seq2seq_no_scheduled_sampling=[])
    for seed, directory in seeds:
        model = Seq2SeqExtractor.from_dir(directory, device=device)
        for name, beam in (("seq2seq", section["beam"]), ("seq2seq_greedy", 1)):
            runs[name].append(
                {"seed": seed, **score(test, seq2seq_predictions(model, data, train_section, test, beam=beam, device=device))}
            )
        if section["ablations"]:
            for name, change in (("seq2seq_no_copy", {"copy": False}), ("seq2seq_no_scheduled_sampling", {"scheduled_sampling": False})):
                variant = train_variant(train_section, data, work_dir=Path(ctx.work_dir), seed=seed, **change)
                predicted = seq2seq_predictions(variant, data, {**dict(train_section), **change}, test, beam=section["beam"], device=device)
                runs[name].append({"seed": seed, **score(test, predicted)})
    return runs


def baseline_systems(ctx, splits, *, pos: dict[str, list[str]], seeds: list[int], device) -> dict[str, list[dict]]:
    """Baselines (a) and (b), one run per seed (the seeds of the seq2seq models)."""
    section = ctx.section
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    runs: dict[str, list[dict]] = {"baseline_a": [], "baseline_b": []}
    for seed in seeds:
        runs["baseline_a"].append({"seed": seed, **score(test, baseline_a(train, test, pos=pos, c=section["svm_c"], seed=seed))})
        predicted = baseline_b(
            train,
            dev,
            test,
            pos=pos,
            c=section["svm_c"],
            seed=seed,
            epochs=section["tagger_epochs"],
            work_dir=Path(ctx.work_dir) / f"tagger-{seed}",
            device=device,
        )
        runs["baseline_b"].append({"seed": seed, **score(test, predicted)})
    return runs


def evaluate_extractor_stage(ctx) -> dict[str, Any]:
    from pipeline.io import atomic_open, read_json, write_json
    from pipeline.models.runtime import pick_device
    from pipeline.paths import EXTRACTOR_DIR, EXTRACTOR_REPORT, EXTRACTOR_TABLE, SENTENCES, TOKENS
    from pipeline.text.tokenize import read_token_rows
    from pipeline.training.extractor import ExtractorData, build_vocabularies, read_examples

    section, train_section = ctx.section, ctx.config["train_extractor"]
    device = pick_device(section["device"])
    splits = read_examples(ctx.input(TOKENS), ctx.input(SENTENCES), splits=("train", "dev", "test"))
    train, test = splits["train"], splits["test"]
    source, target = build_vocabularies(train, train_section)
    data = ExtractorData(source_vocab=source, target_vocab=target, splits=splits)
    pos = {row["sentence_id"]: row.get("pos", []) for row in read_token_rows(ctx.input(TOKENS), split="test")}
    seeds = trained_seeds(ctx.input(EXTRACTOR_DIR), seed=train_section["seed"])
    runs = seq2seq_systems(ctx, data, test, seeds=seeds, device=device)
    runs.update(baseline_systems(ctx, splits, pos=pos, seeds=[seed for seed, _ in seeds], device=device))
    report: dict[str, Any] = {name: mean_std(values) for name, values in runs.items()}
    report["comparisons"] = comparisons(report)
    report["test_sentences"] = len(test)
    report["test_records"] = sum(len(e.records) for e in test)
    report["beam"] = section["beam"]
    report["saved_seed"] = read_json(ctx.input(EXTRACTOR_DIR) / "metrics.json").get("seed", seeds[0][0])
    write_json(ctx.output(EXTRACTOR_REPORT), report)
    with atomic_open(ctx.output(EXTRACTOR_TABLE), encoding="utf-8") as handle:
        handle.write(extractor_table(report))
    for name in runs:
        logger.info(
            "%s: record F1 %.4f ± %.4f, expression F1 %.4f, expression overlap F1 %.4f ± %.4f, polarity accuracy %.4f ± %.4f",
            name,
            report[name]["record_f1"],
            report[name]["record_f1_std"],
            report[name]["expression_f1"],
            report[name]["expression_overlap_f1"],
            report[name]["expression_overlap_f1_std"],
            report[name]["polarity_accuracy"],
            report[name]["polarity_accuracy_std"],
        )
    return {f"{name}_record_f1": report[name]["record_f1"] for name in runs}


# -------------------------------------------------------------------- table
_SYSTEM_NAMES = {
    "seq2seq": "seq2seq, beam {beam}",
    "seq2seq_greedy": "seq2seq, greedy (beam 1)",
    "baseline_a": "(a) TF-IDF type + last predicate",
    "baseline_b": "(b) BiLSTM BIO tagger + typed spans",
    "seq2seq_no_copy": "seq2seq, copy off (beam {beam})",
    "seq2seq_no_scheduled_sampling": "seq2seq, scheduled sampling off (beam {beam})",
}
_TABLE_COLUMNS = (
    ("expression_overlap_f1", "expr overlap F1"),
    ("target_overlap_f1", "target overlap F1"),
    ("polarity_accuracy", "polarity acc (overlap)"),
    ("type_accuracy_overlap", "type acc (overlap)"),
    ("record_f1", "record F1"),
    ("typed_expression_f1", "type+expr F1"),
    ("expression_f1", "expr exact F1"),
    ("expression_tokens_f1", "expr token F1"),
    ("type_accuracy", "type acc (matched)"),
    ("target_f1", "target F1"),
    ("no_opinion_precision", "no-op P"),
    ("no_opinion_recall", "no-op R"),
)


def extractor_table(report: dict[str, Any]) -> str:
    """``models/report/extractor.md``: every system's test scores as mean ± std over seeds, then each
    system against the seq2seq model (beam) with "within noise" where the difference is inside the spread."""
    systems = [name for name in _SYSTEM_NAMES if name in report]
    lines = [
        "# Opinion (評判) extractor: test scores",
        "",
        f"Test split: {report['test_sentences']} sentences of articles held out from training, {report['test_records']} gold records. "
        f"Mean ± std (population) over the seeds of each row; the seq2seq seeds are train_extractor's models (kept: seed "
        f"{report.get('saved_seed', '-')}, the median by dev record F1 + expression F1).",
        "",
        "| system | seeds | " + " | ".join(title for _, title in _TABLE_COLUMNS) + " |",
        "|---|---|" + "---|" * len(_TABLE_COLUMNS),
    ]
    for name in systems:
        row = report[name]
        cells = [f"{row[key]:.3f} ± {row[f'{key}_std']:.3f}" for key, _ in _TABLE_COLUMNS]
        lines.append(f"| {_SYSTEM_NAMES[name].format(beam=report['beam'])} | {row['seeds']} | " + " | ".join(cells) + " |")
    lines += ["", "seq2seq (beam) minus each other system (difference of the means; spread = the larger std):", ""]
    for name, scores in report.get("comparisons", {}).items():
        parts = [f"{title} {_verdict(scores[key])}" for key, title in _TABLE_COLUMNS if key in scores]
        lines.append(f"- vs {_SYSTEM_NAMES[name].format(beam=report['beam'])}: " + "; ".join(parts))
    return "\n".join(lines + _type_count_lines(report, systems)) + "\n"


def _type_count_lines(report: dict[str, Any], systems: list[str]) -> list[str]:
    """Per type: gold records, then for each system predicted · matched (overlap) · correct type, means over seeds."""
    shown = [name for name in systems if report[name].get("type_counts")]
    if not shown:
        return []
    kinds = sorted({kind for name in shown for kind in report[name]["type_counts"]})
    lines = [
        "",
        "Per type (mean over seeds): gold records, then per system predicted (records given this type) · matched (gold records of "
        "this type whose expression a prediction overlaps by >= 50 %) · same type (of those, the prediction has this type):",
        "",
        "| type | gold | " + " | ".join(_SYSTEM_NAMES[name].format(beam=report["beam"]) for name in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for kind in kinds:
        gold = next((report[n]["type_counts"][kind]["gold"] for n in shown if kind in report[n]["type_counts"]), 0)
        cells = []
        for name in shown:
            counts = report[name]["type_counts"].get(kind, {"predicted": 0, "matched": 0, "correct": 0})
            cells.append(f"{counts['predicted']:g} · {counts['matched']:g} · {counts['correct']:g}")
        lines.append(f"| {kind} | {gold:g} | " + " | ".join(cells) + " |")
    return lines


def _verdict(comparison: dict[str, Any]) -> str:
    spread = comparison["spread"]
    noise = "within noise" if comparison["within_noise"] else f"beyond the spread {spread:.3f}"
    return f"{comparison['difference']:+.3f} ({noise})"
