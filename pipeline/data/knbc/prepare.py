"""Stage ``prepare``: one sentence table from corpus1 (KNP) and corpus2 (評判), with splits.

Each row of ``data/prepared/sentences.jsonl``::

    sentence_id, article_id, theme, position, split, text,
    gold: {surface, reading, lemma, pos, pos_detail, conj_type, conj_form}   (KNP morphemes, columnar)
    bunsetsu / tag_units: [{start, head, dep}]                               (start = first morpheme index)
    evaluations: [{evaluator, expression, type, polarity, target}]
    sentiment: positive | negative | neutral,  mixed_polarity: bool

**Sentiment rule.** Every 評判 annotation whose type ends in ＋ counts +1, in −
counts −1; 当為 and 要望 carry no polarity. The label is *positive* when the
sum is > 0, *negative* when < 0, and *neutral* otherwise: no annotation, only
non-polar ones, or as many positive as negative ones (a tie). Sentences with
both polarities are flagged ``mixed_polarity`` (85 in KNBC v1.0).

**Split.** Articles, not sentences, are assigned to train / dev / test, so no
article is in two splits. Within each theme the articles are shuffled with the
configured seed and cut by the configured ratios (stratified by theme).
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.data.knbc.fetch import SENTENCE_FILE
from pipeline.data.labels import SENTIMENTS, SPLITS, THEMES
from pipeline.errors import InputError, WorkflowError

logger = logging.getLogger(__name__)

_POSITIVE_MARKS = ("＋", "+")
_NEGATIVE_MARKS = ("−", "－", "-")


def sentence_sort_key(sentence_id: str) -> tuple:
    """``KN001_Keitai_1-1-7-02`` -> (1, 7, 2): the order of sentences inside an article."""
    suffix = sentence_id.split("-", 1)[1] if "-" in sentence_id else ""
    return tuple(int(part) for part in suffix.split("-") if part.isdigit())


def article_of(sentence_id: str) -> str:
    return sentence_id.split("-", 1)[0]


def theme_of(article_id: str) -> str:
    for theme in THEMES:
        if f"_{theme}_" in f"{article_id}_":
            return theme
    raise InputError("E207", f"Cannot tell the theme of article {article_id}: expected one of {', '.join(THEMES)} in its name.")


def parse_knp(text: str) -> dict[str, Any]:
    """Parse one KNP-format sentence (``# S-ID`` line, ``*`` bunsetsu, ``+`` tag units, morphemes, ``EOS``)."""
    gold: dict[str, list[str]] = {key: [] for key in ("surface", "reading", "lemma", "pos", "pos_detail", "conj_type", "conj_form")}
    bunsetsu: list[dict[str, Any]] = []
    tag_units: list[dict[str, Any]] = []
    sentence_id = None
    for line in text.splitlines():
        if not line or line == "EOS":
            continue
        if line.startswith("#"):
            match = re.search(r"S-ID:(\S+)", line)
            if match:
                sentence_id = match.group(1)
            continue
        if line.startswith(("* ", "+ ")):
            match = re.match(r"^[*+] (-?\d+)([DPIA])", line)
            if not match:
                raise InputError("E207", f"bad KNP dependency line: {line[:60]}")
            unit = {"start": len(gold["surface"]), "head": int(match.group(1)), "dep": match.group(2)}
            (bunsetsu if line[0] == "*" else tag_units).append(unit)
            continue
        # surface reading lemma pos pos_id pos_detail id conj_type id conj_form id [features]
        fields = line.split(" ", 11)
        if len(fields) < 11:
            raise InputError("E207", f"bad KNP morpheme line: {line[:60]}")
        gold["surface"].append(fields[0])
        gold["reading"].append(fields[1])
        gold["lemma"].append(fields[2])
        gold["pos"].append(fields[3])
        gold["pos_detail"].append(fields[5])
        gold["conj_type"].append(fields[7])
        gold["conj_form"].append(fields[9])
    return {"sentence_id": sentence_id, "gold": gold, "bunsetsu": bunsetsu, "tag_units": tag_units}


def polarity_of(evaluation_type: str) -> str | None:
    if evaluation_type.endswith(_POSITIVE_MARKS):
        return "+"
    if evaluation_type.endswith(_NEGATIVE_MARKS):
        return "-"
    return None


def parse_evaluations(evaluator: str, expression: str, evaluation_type: str, target: str) -> list[dict[str, Any]]:
    """corpus2 packs several annotations of one sentence into each column, separated by a literal ``\\n``."""
    columns = [value.split("\\n") if value else [] for value in (evaluator, expression, evaluation_type, target)]
    count = max(len(column) for column in columns)
    evaluations = []
    for index in range(count):
        values = [column[index] if index < len(column) else "" for column in columns]
        if not any(values):
            continue
        evaluations.append(
            {"evaluator": values[0], "expression": values[1], "type": values[2], "polarity": polarity_of(values[2]), "target": values[3]}
        )
    return evaluations


def sentiment_label(evaluations: list[dict[str, Any]]) -> tuple[str, bool]:
    """(label, mixed): see the module docstring for the rule."""
    positive = sum(1 for e in evaluations if e["polarity"] == "+")
    negative = sum(1 for e in evaluations if e["polarity"] == "-")
    label = "positive" if positive > negative else "negative" if negative > positive else "neutral"
    return label, positive > 0 and negative > 0


def read_corpus2(root: Path) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for tsv in sorted((root / "corpus2").glob("*.tsv")):
        with open(tsv, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 2:
                    raise InputError("E207", f"{tsv.name}:{line_number}: expected tab-separated columns, got {line[:60]!r}.")
                fields += [""] * (6 - len(fields))
                rows[fields[0]] = {"text": fields[1], "evaluations": parse_evaluations(*fields[2:6])}
    return rows


def split_articles(articles_by_theme: dict[str, list[str]], *, train_ratio: float, dev_ratio: float, seed: int) -> dict[str, str]:
    """article id -> split, stratified by theme, deterministic for a seed."""
    assignment: dict[str, str] = {}
    rng = random.Random(seed)
    for theme in sorted(articles_by_theme):
        articles = sorted(articles_by_theme[theme])
        rng.shuffle(articles)
        n_train = round(len(articles) * train_ratio)
        n_dev = round(len(articles) * dev_ratio)
        for index, article in enumerate(articles):
            assignment[article] = "train" if index < n_train else "dev" if index < n_train + n_dev else "test"
    return assignment


def parse_corpus1(root: Path) -> list[dict[str, Any]]:
    """Every KNP sentence file of ``corpus1/``, parsed (article directories in name order)."""
    parsed: list[dict[str, Any]] = []
    for article_dir in sorted(p for p in (root / "corpus1").iterdir() if p.is_dir()):
        for path in article_dir.iterdir():
            if not (path.is_file() and SENTENCE_FILE.match(path.name)):
                continue
            try:
                sentence = parse_knp(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise InputError(
                    "E207",
                    f"Cannot parse {path}: {exc}.",
                    hint="The extracted corpus is damaged: delete data/corpus/ and run `jpipe run corpus` again.",
                ) from None
            sentence["sentence_id"] = sentence["sentence_id"] or path.name
            parsed.append(sentence)
    return parsed


def articles_by_theme(sentences: list[dict[str, Any]]) -> dict[str, list[str]]:
    """theme -> article ids, in order of first appearance."""
    themes: dict[str, list[str]] = {}
    for sentence in sentences:
        article = article_of(sentence["sentence_id"])
        articles = themes.setdefault(theme_of(article), [])
        if article not in articles:
            articles.append(article)
    return themes


def build_rows(root: Path, *, train_ratio: float, dev_ratio: float, seed: int) -> list[dict[str, Any]]:
    """The sentence table: corpus1 sentences in article order, with their corpus2 text and annotations, labels and split."""
    corpus2 = read_corpus2(root)
    parsed = parse_corpus1(root)
    splits = split_articles(articles_by_theme(parsed), train_ratio=train_ratio, dev_ratio=dev_ratio, seed=seed)
    parsed.sort(key=lambda s: (article_of(s["sentence_id"]), sentence_sort_key(s["sentence_id"])))
    rows, positions, missing = [], Counter(), []
    for sentence in parsed:
        sentence_id = sentence["sentence_id"]
        article = article_of(sentence_id)
        annotation = corpus2.get(sentence_id)
        if annotation is None:
            missing.append(sentence_id)
            annotation = {"text": "".join(sentence["gold"]["surface"]), "evaluations": []}
        label, mixed = sentiment_label(annotation["evaluations"])
        rows.append(
            {
                "sentence_id": sentence_id,
                "article_id": article,
                "theme": theme_of(article),
                "position": positions[article],
                "split": splits[article],
                "text": annotation["text"],
                "gold": sentence["gold"],
                "bunsetsu": sentence["bunsetsu"],
                "tag_units": sentence["tag_units"],
                "evaluations": annotation["evaluations"],
                "sentiment": label,
                "mixed_polarity": mixed,
            }
        )
        positions[article] += 1
    if missing:
        logger.warning("%d corpus1 sentences have no corpus2 row (text rebuilt from morphemes): %s", len(missing), ", ".join(missing[:5]))
    return rows


def compute_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    for split in SPLITS:
        selected = [row for row in rows if row["split"] == split]
        splits[split] = {
            "articles": len({row["article_id"] for row in selected}),
            "sentences": len(selected),
            "theme": dict(Counter(row["theme"] for row in selected)),
            "sentiment": dict(Counter(row["sentiment"] for row in selected)),
        }
    return {
        "labels": {"theme": THEMES, "sentiment": SENTIMENTS},
        "splits": splits,
        "articles": len({row["article_id"] for row in rows}),
        "sentences": len(rows),
        "mixed_polarity_sentences": sum(1 for row in rows if row["mixed_polarity"]),
        "sentences_with_evaluations": sum(1 for row in rows if row["evaluations"]),
        "evaluation_types": dict(Counter(e["type"] for row in rows for e in row["evaluations"]).most_common()),
    }


def prepare_stage(ctx) -> dict[str, Any]:
    from pipeline.io import write_json, write_jsonl
    from pipeline.paths import CORPUS_DIR, CORPUS_MANIFEST, CORPUS_STATS, SENTENCES

    ctx.input(CORPUS_MANIFEST)
    section = ctx.section
    rows = build_rows(ctx.input(CORPUS_DIR), train_ratio=section["train_ratio"], dev_ratio=section["dev_ratio"], seed=section["seed"])
    write_jsonl(ctx.output(SENTENCES), rows)
    stats = compute_stats(rows)
    write_json(ctx.output(CORPUS_STATS), stats)
    return {
        "sentences": stats["sentences"],
        "articles": stats["articles"],
        **{f"{split}_sentences": stats["splits"][split]["sentences"] for split in SPLITS},
        "mixed_polarity": stats["mixed_polarity_sentences"],
    }


def load_stats(project_dir: str | os.PathLike) -> dict[str, Any]:
    from pipeline.io import read_json
    from pipeline.paths import CORPUS_STATS

    path = Path(project_dir) / CORPUS_STATS
    if not path.exists():
        raise WorkflowError("E404", f"No corpus statistics in {project_dir}.", hint="Run `jpipe run prepare` first.")
    return read_json(path)
