"""Stages ``evaluate_<task>``: test-split metrics of a task's BiLSTM classifier against baselines.

For each task (topic, sentiment and every ``[tasks.NAME]``), on the task's test split:

* ``bilstm_attention``: the trained model of ``models/classifier/<task>`` (with ``seeds`` > 1 the
  median-dev seed; every seed of ``seeds/<seed>/`` is scored too: ``per_seed``, and
  ``macro_f1_mean`` / ``macro_f1_std`` / ``accuracy_mean`` / ... over the seeds);
* ``majority``: always the most frequent training label;
* ``tfidf_linear``: TF-IDF of character 1-3-grams of the raw sentence + a linear SVM
  (scikit-learn ``LinearSVC``), trained on the same training split.

Each gets accuracy, macro-F1 and per-class precision / recall / F1 / support (a baseline is one
deterministic run: its ``_mean`` is its figure and its ``_std`` 0), computed by
``pipeline.metrics`` (the same code as training's dev macro-F1; scikit-learn only trains
the baseline).
Output: ``models/report/tasks/<task>/`` with ``report.json``
(``{"bilstm_attention": {...}, "tfidf_linear": {...}, "majority": {...}, "label_distribution": {split: {label: n}},
"comparisons": [{"a", "b", "difference", "spread", "within_noise"}]}``),
``confusion.png`` and ``training.png``. The ``report`` stage merges every task's report
into ``models/report/classifiers.json`` and ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MODEL_NAMES = ("bilstm_attention", "tfidf_linear", "majority")
ROW_NAMES = ("bilstm_attention", "bilstm_ensemble", "tfidf_linear", "majority")  # bilstm_ensemble: with [classifier] ensemble = true


def classification_metrics(*, targets: list[int], predictions: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support (zero when undefined), 4 digits."""
    from pipeline.metrics import classification_report

    return classification_report(targets=targets, predictions=predictions, labels=labels, digits=4)


def tfidf_baseline(
    *, train_texts: list[str], train_targets: list[int], test_texts: list[str], c: float, class_weight: str, seed: int
) -> list[int]:
    """TF-IDF (char 1-3-grams, sublinear tf) + LinearSVC predictions for ``test_texts``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1),
        LinearSVC(C=c, class_weight=None if class_weight == "none" else class_weight, random_state=seed),
    )
    model.fit(train_texts, train_targets)
    return [int(p) for p in model.predict(test_texts)]


def _bilstm_predictions(
    *, task: str, test: list[dict], model_dir: Path, labels: list[str], label_field: str, device: str
) -> tuple[list[int], dict[str, Any]]:
    """Test-split predictions of the trained model of ``model_dir``, and its training metrics."""
    probabilities, trained = bilstm_probabilities(
        task=task, test=test, model_dir=model_dir, labels=labels, label_field=label_field, device=device
    )
    return probabilities.argmax(axis=1).tolist(), trained


def bilstm_probabilities(
    *, task: str, test: list[dict], model_dir: Path, labels: list[str], label_field: str, device: str
) -> tuple[Any, dict[str, Any]]:
    """Test-split (N, C) raw softmax probabilities of the model of ``model_dir`` (its own weights: no temperature,
    no ensemble), and its training metrics."""
    from pipeline.errors import ModelError
    from pipeline.models.batching import encode_rows
    from pipeline.models.classifier import load_classifier, predict_split
    from pipeline.models.runtime import pick_device

    loaded = load_classifier(model_dir, device=pick_device(device))
    if loaded.labels != labels:
        raise ModelError(
            "E303", f"{model_dir} predicts {loaded.labels}, expected {labels}.", hint=f"Retrain it with `jpipe run train_{task}`."
        )
    encoded = encode_rows(
        test, loaded.vocab, token_field=loaded.token_field, label_field=label_field, labels=labels, max_tokens=loaded.max_tokens
    )
    return predict_split(loaded.model, encoded, device=loaded.device)["probabilities"], loaded.metrics


SPREAD_KEYS = ("macro_f1", "accuracy")  # figures given as mean ± std over the seeds


def score_seeds(
    *, task: str, test: list[dict], model_dir: Path, labels: list[str], label_field: str, device: str, outputs: dict | None = None
) -> list[dict[str, Any]]:
    """Test accuracy and macro-F1 of every seed's model (with its dev macro-F1, best epoch, and test ECE / Brier / NLL
    before and after its dev-fitted temperature); ``outputs`` (when given) gets seed -> test probabilities."""
    from pipeline.evaluation.calibration import calibration_figures
    from pipeline.models.calibration import model_temperature
    from pipeline.models.model_dir import seed_model_dirs

    index = {label: i for i, label in enumerate(labels)}
    targets = [index[row[label_field]] for row in test]
    runs = []
    for directory in seed_model_dirs(model_dir):
        probabilities, trained = bilstm_probabilities(
            task=task, test=test, model_dir=directory, labels=labels, label_field=label_field, device=device
        )
        if outputs is not None:
            outputs[int(directory.name)] = probabilities
        predictions = probabilities.argmax(axis=1).tolist()
        scores = classification_metrics(targets=targets, predictions=predictions, labels=labels)
        runs.append(
            {
                "seed": int(directory.name),
                "macro_f1": scores["macro_f1"],
                "accuracy": scores["accuracy"],
                "dev_macro_f1": trained.get("dev_macro_f1"),
                "best_epoch": trained.get("best_epoch"),
                **calibration_figures(probabilities, targets, temperature=model_temperature(directory)),
            }
        )
    return runs


def with_spread(figures: dict[str, Any], runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``figures`` plus ``seeds`` and ``<key>_mean`` / ``<key>_std`` of :data:`SPREAD_KEYS` (4 digits).

    Without ``runs`` (a baseline, or a single-seed model) the figure is its own mean with std 0:
    one deterministic run has no seed spread to report.
    """
    from pipeline.metrics import mean_std

    runs = runs or [figures]
    keys = (
        [*SPREAD_KEYS, "dev_macro_f1"]
        if all(run.get("dev_macro_f1") is not None for run in runs) and "dev_macro_f1" in figures
        else SPREAD_KEYS
    )
    spread: dict[str, Any] = {"seeds": len(runs)}
    for key in keys:
        mean, std = mean_std(run[key] for run in runs)
        spread[f"{key}_mean"], spread[f"{key}_std"] = round(mean, 4), round(std, 4)
    return {**figures, **spread}


def noise_comparisons(result: dict[str, Any], names=MODEL_NAMES) -> list[dict[str, Any]]:
    """Every pair of rows by test macro-F1: the difference of the means and whether it is within noise
    (``|mean_a - mean_b| <= max(std_a, std_b)``, :func:`pipeline.metrics.within_noise`)."""
    from pipeline.metrics import within_noise

    rows = [name for name in names if name in result]
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            mean_a, std_a = result[a]["macro_f1_mean"], result[a]["macro_f1_std"]
            mean_b, std_b = result[b]["macro_f1_mean"], result[b]["macro_f1_std"]
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "difference": round(mean_a - mean_b, 4),
                    "spread": max(std_a, std_b),
                    "within_noise": within_noise(mean_a=mean_a, std_a=std_a, mean_b=mean_b, std_b=std_b),
                }
            )
    return pairs


def label_distribution(rows: list[dict], *, labels: list[str], field: str) -> dict[str, dict[str, int]]:
    """split -> label -> rows, every label listed."""
    counts = Counter((row["split"], row[field]) for row in rows)
    return {split: {label: counts[(split, label)] for label in labels} for split in ("train", "dev", "test")}


def _bilstm_row(
    probabilities,
    targets: list[int],
    *,
    trained: dict,
    task: str,
    test: list[dict],
    model_dir: Path,
    labels: list[str],
    field: str,
    device: str,
) -> tuple[dict[str, Any], dict[int, Any]]:
    """The kept model's figures (its test ``probabilities``), with every seed's (``per_seed``) and their mean ± std;
    ``calibration``: test ECE / Brier / NLL before and after the temperatures (kept model, and mean ± std over the seeds).
    Also returns seed -> test probabilities."""
    from pipeline.evaluation.calibration import calibration_figures, spread
    from pipeline.models.calibration import model_temperature

    saved = {
        **classification_metrics(targets=targets, predictions=probabilities.argmax(axis=1).tolist(), labels=labels),
        **{key: trained.get(key) for key in ("dev_macro_f1", "best_epoch", "embedding_init")},
    }
    kept = calibration_figures(probabilities, targets, temperature=model_temperature(model_dir))
    outputs: dict[int, Any] = {}
    runs = score_seeds(task=task, test=test, model_dir=model_dir, labels=labels, label_field=field, device=device, outputs=outputs)
    if runs:  # the kept model is one of the seeds: which one
        saved = {**saved, "saved_seed": trained.get("seed_summary", {}).get("saved_seed"), "per_seed": runs}
    saved["calibration"] = {**kept, **spread(runs or [kept])}
    return with_spread(saved, runs), outputs


def _ensemble_row(
    targets: list[int], *, outputs: dict[int, Any], task: str, test: list[dict], model_dir: Path, labels: list[str], field: str, device: str
) -> tuple[dict[str, Any], Any, Any] | None:
    """The ``bilstm_ensemble`` row (one run: std 0) and its test probabilities before / after, when ``model_dir`` is an ensemble."""
    from pipeline.evaluation.calibration import ensemble_row
    from pipeline.models.calibration import model_temperature, read_ensemble

    spec = read_ensemble(model_dir)
    if spec is None:
        return None
    member_probabilities = []
    for directory in spec["member_dirs"]:
        seed = int(directory.name) if directory.name.isdigit() else None
        if seed not in outputs:
            outputs[seed] = bilstm_probabilities(
                task=task, test=test, model_dir=directory, labels=labels, label_field=field, device=device
            )[0]
        member_probabilities.append(outputs[seed])
    row, before, after = ensemble_row(
        member_probabilities,
        targets,
        member_temperatures=[model_temperature(directory) for directory in spec["member_dirs"]],
        temperature=spec["temperature"],
        labels=labels,
    )
    return with_spread(row), before, after


def _baseline_rows(
    *, train: list[dict], test: list[dict], targets: list[int], labels: list[str], field: str, section: dict
) -> tuple[list[int], dict[str, Any]]:
    """The TF-IDF SVM's test predictions, and the ``tfidf_linear`` and ``majority`` rows (one run each: std 0)."""
    index = {label: i for i, label in enumerate(labels)}
    majority_label = Counter(row[field] for row in train).most_common(1)[0][0]
    tfidf_predictions = tfidf_baseline(
        train_texts=[row["text"] for row in train],
        train_targets=[index[row[field]] for row in train],
        test_texts=[row["text"] for row in test],
        c=section["svm_c"],
        class_weight=section["svm_class_weight"],
        seed=section["seed"],
    )
    tfidf = classification_metrics(targets=targets, predictions=tfidf_predictions, labels=labels)
    majority = classification_metrics(targets=targets, predictions=[index[majority_label]] * len(test), labels=labels)
    return tfidf_predictions, {
        "tfidf_linear": with_spread({**tfidf, "features": "tfidf char 1-3-grams", "classifier": "LinearSVC"}),
        "majority": with_spread({**majority, "label": majority_label}),
    }


def evaluate_task(
    *, task: str, rows: list[dict], model_dir: Path, section: dict, labels: list[str], field: str, device: str = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of the three models on the test split, plus what the plots need.

    ``field`` is the row field holding the label; ``labels`` the task's labels in model order.
    """
    from pipeline.metrics import confusion_matrix

    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    train = [row for row in rows if row["split"] == "train"]
    test = [row for row in rows if row["split"] == "test"]
    targets = [index[row[field]] for row in test]

    if not test:
        from pipeline.errors import InputError

        raise InputError("E209", f"Task {task} has no test rows.", hint=f"Give tasks.{task}.test_data, or raise tasks.{task}.test_ratio.")
    probabilities, trained = bilstm_probabilities(
        task=task, test=test, model_dir=model_dir, labels=labels, label_field=field, device=device
    )
    bilstm_predictions = probabilities.argmax(axis=1).tolist()
    tfidf_predictions, baselines = _baseline_rows(train=train, test=test, targets=targets, labels=labels, field=field, section=section)
    where = dict(task=task, test=test, model_dir=model_dir, labels=labels, field=field, device=device)
    bilstm, outputs = _bilstm_row(probabilities, targets, trained=trained, **where)
    ensemble = _ensemble_row(targets, outputs=outputs, **where)
    result = {
        "bilstm_attention": bilstm,
        **({"bilstm_ensemble": ensemble[0]} if ensemble else {}),
        **baselines,
        "label_distribution": label_distribution(rows, labels=labels, field=field),
    }
    result["comparisons"] = noise_comparisons(result, ROW_NAMES)
    plot_data = {
        "reliability": _reliability_data(probabilities, targets, model_dir=model_dir, ensemble=ensemble),
        "labels": labels,
        "confusion": {
            "bilstm_attention": confusion_matrix(targets, bilstm_predictions, num_classes=len(labels)),
            "tfidf_linear": confusion_matrix(targets, tfidf_predictions, num_classes=len(labels)),
        },
        "train_log": _read_log(model_dir / "train_log.jsonl"),
        "best_epoch": trained.get("best_epoch"),
    }
    return result, plot_data


def _reliability_data(probabilities, targets: list[int], *, model_dir: Path, ensemble) -> dict[str, Any]:
    """What ``calibration.png`` draws: the published model's test probabilities before and after calibration."""
    from pipeline.models.calibration import apply_temperature, model_temperature

    if ensemble is not None:
        row, before, after = ensemble
        return {
            "before": before,
            "after": after,
            "targets": targets,
            "title": f"seed ensemble of {row['members']}, T = {row['calibration']['temperature']}",
        }
    temperature = model_temperature(model_dir)
    after = apply_temperature(probabilities, temperature)
    return {"before": probabilities, "after": after, "targets": targets, "title": f"kept model, T = {temperature}"}


def _read_log(path: Path) -> list[dict]:
    from pipeline.io import read_jsonl

    return list(read_jsonl(path)) if path.exists() else []


def plot_confusion(*, task: str, plot_data: dict, metrics: dict, path: Path) -> None:
    """Row-normalised confusion matrices (BiLSTM and TF-IDF side by side), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = plot_data["labels"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    for axis, name in zip(axes, ("bilstm_attention", "tfidf_linear"), strict=True):
        counts = plot_data["confusion"][name]
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        axis.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(len(labels)):
            for j in range(len(labels)):
                axis.text(
                    j,
                    i,
                    f"{counts[i, j]}\n{rates[i, j]:.0%}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if rates[i, j] > 0.6 else "black",
                )
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axis.set_yticks(range(len(labels)), labels)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        axis.set_title(f"{name}: macro-F1 {metrics[name]['macro_f1']:.3f}, acc {metrics[name]['accuracy']:.3f}", fontsize=10)
    figure.suptitle(f"{task}: test-split confusion matrices")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_training_curve(*, task: str, log: list[dict], best_epoch: int | None, path: Path) -> None:
    """Train / dev loss and dev macro-F1 per epoch; the kept (best) epoch is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, f1_axis) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    epochs = [r["epoch"] for r in log]
    loss_axis.plot(epochs, [r["train_loss"] for r in log], marker="o", label="train loss")
    loss_axis.plot(epochs, [r["dev_loss"] for r in log], marker="o", label="dev loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("cross-entropy")
    loss_axis.legend()
    f1_axis.plot(epochs, [r["dev_macro_f1"] for r in log], marker="o", color="tab:green", label="dev macro-F1")
    f1_axis.plot(epochs, [r["train_accuracy"] for r in log], marker=".", color="tab:gray", label="train accuracy")
    if best_epoch:
        for axis in (loss_axis, f1_axis):
            axis.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1, label="kept epoch" if axis is f1_axis else None)
    f1_axis.set_xlabel("epoch")
    f1_axis.set_ylim(0, 1)
    f1_axis.legend()
    figure.suptitle(f"{task}: training curve")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def evaluate_task_stage(ctx) -> dict[str, Any]:
    """Stage ``evaluate_<task>``: ``report.json``, ``confusion.png``, ``training.png`` and ``calibration.png`` of one task."""
    from pipeline.data.tasks import label_field, task_labels, task_rows_file
    from pipeline.evaluation.calibration import plot_reliability
    from pipeline.io import write_json
    from pipeline.paths import classifier_dir, task_report_dir
    from pipeline.text.tokenize import read_token_rows

    task = ctx.stage.task
    spec = ctx.config.task(task)
    field = label_field(spec)
    tokens_path = ctx.input(task_rows_file(ctx.config, task))
    labels = task_labels(ctx.project_dir, task=task, section=spec, tokens_path=tokens_path)
    rows = [
        {key: row[key] for key in ("split", "text", field, "surface", "lemma", "norm") if key in row}
        for row in read_token_rows(tokens_path)
    ]
    model_dir = ctx.input(classifier_dir(task))
    result, plot_data = evaluate_task(
        task=task, rows=rows, model_dir=model_dir, section=ctx.section, labels=labels, field=field, device=ctx.section["device"]
    )
    out = ctx.output(task_report_dir(task))
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(task=task, plot_data=plot_data, metrics=result, path=out / "confusion.png")
    if plot_data["train_log"]:
        plot_training_curve(task=task, log=plot_data["train_log"], best_epoch=plot_data["best_epoch"], path=out / "training.png")
    plot_reliability(task=task, **plot_data["reliability"], path=out / "calibration.png")
    write_json(out / "report.json", result)
    bilstm = result["bilstm_attention"]
    logger.info(
        "%s test macro-F1: BiLSTM+attention %.4f (mean %.4f ± %.4f over %d seeds) | TF-IDF SVM %.4f | majority %.4f",
        task,
        bilstm["macro_f1"],
        bilstm["macro_f1_mean"],
        bilstm["macro_f1_std"],
        bilstm["seeds"],
        result["tfidf_linear"]["macro_f1"],
        result["majority"]["macro_f1"],
    )
    summary = {f"{name}_macro_f1": result[name]["macro_f1"] for name in MODEL_NAMES}
    if bilstm["seeds"] > 1:
        summary.update(bilstm_attention_macro_f1_mean=bilstm["macro_f1_mean"], bilstm_attention_macro_f1_std=bilstm["macro_f1_std"])
    calibration = bilstm["calibration"]
    summary.update(bilstm_attention_ece_before=calibration["ece_before_mean"], bilstm_attention_ece_after=calibration["ece_after_mean"])
    if "bilstm_ensemble" in result:
        ensemble = result["bilstm_ensemble"]
        summary.update(bilstm_ensemble_macro_f1=ensemble["macro_f1"], bilstm_ensemble_ece_after=ensemble["calibration"]["ece_after"])
    return summary
