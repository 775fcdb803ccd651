"""Stage ``evaluate_generator``: test perplexity of the LSTM against an ``nltk.lm`` n-gram baseline.

Both models are scored on exactly the same events, so the two numbers compare:

- the same units: the model's level (GiNZA surface tokens or characters) of the
  test-split sentences (articles held out from training);
- the same vocabulary: the generator's ``vocab.json``. Test units outside it
  become ``<unk>`` for both models, and the n-gram model is trained on the
  training sentences with the same ``<unk>`` mapping, so ``<unk>`` has counts;
- the same targets: each sentence's units and its ``</s>``, each predicted once.
  Sentence starts are context (``<s>``), never predicted. The LSTM gets no theme
  ("any theme" slot), because the n-gram model does not see it either; the
  perplexity with the true theme is reported next to it.

Perplexity = exp(total negative log-likelihood / number of targets) (``pipeline.metrics``);
the n-gram model is ``pipeline.evaluation.ngram``.

With ``train_generator.seeds`` > 1 every seed's model is scored on the same targets (mean ± std,
and whether the LSTM's difference from the n-gram model is within that noise). With
``init = "pretrained"`` two more rows share the targets and vocabulary: the language model before
fine-tuning, and an n-gram model fitted on the same text as the pretrained LM. ``generator.md``
shows every row as a table, and the share of ``<unk>`` among the targets in the generator's
vocabulary: KNBC's test targets (every row's) and, with init = "pretrained", the pretraining text's
held-apart documents (with ``train_generator.vocab_size`` > 0 the vocabulary holds the corpus's
most frequent words, and both shares drop).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipeline.evaluation.ngram import fit_ngram, map_to_vocabulary, ngram_nll, pad_sentence
from pipeline.io import atomic_open, write_json
from pipeline.metrics import perplexity

__all__ = ["evaluate_generator_stage", "fit_ngram", "map_to_vocabulary", "ngram_nll", "pad_sentence"]

logger = logging.getLogger(__name__)

# Sampling settings of the report's example texts.
SAMPLE_SETTINGS = {"max_tokens": 60, "temperature": 0.8, "top_k": 40, "top_p": 0.9}


# --------------------------------------------------------------------- stage
def _score_lstm(loaded, test_rows: list[dict], *, device) -> dict[str, Any]:
    """Test perplexity of the LSTM on the unit it was trained on (sentences or articles), without theme information."""
    from pipeline.training.language_model import build_sequences, corpus_nll, encode, target_count

    vocab = loaded.vocab
    test_encoded = encode(build_sequences(test_rows, level=loaded.level, unit=loaded.unit), vocab)
    started = time.perf_counter()
    nll, count = corpus_nll(loaded.model, test_encoded, pad_index=vocab.pad_index, device=device)
    lstm = {
        "perplexity": round(perplexity(nll, count), 3),
        "level": loaded.level,
        "sequence_unit": loaded.unit,
        "theme_information": False,
        "targets": count,
        "score_seconds": round(time.perf_counter() - started, 3),
        "device": device.type,
        "model": loaded.metrics.get("config", {}),
    }
    if loaded.theme_conditioned:
        with_theme = corpus_nll(loaded.model, test_encoded, pad_index=vocab.pad_index, device=device, use_theme=True)
        lstm["perplexity_with_theme"] = round(perplexity(*with_theme), 3)
    if count != target_count(test_encoded):
        raise RuntimeError(f"The LSTM scored {count} targets, the test set has {target_count(test_encoded)}")
    return lstm


def _unit_sentences(loaded, rows: list[dict]) -> list[list[str]]:
    """The rows' units in the model's vocabulary (others -> <unk>)."""
    from pipeline.training.language_model import sentence_units

    known = set(loaded.vocab.itos)
    return [map_to_vocabulary(sentence_units(r, level=loaded.level), known=known) for r in rows]


def _score_ngram(loaded, train_sentences: list[list[str]], test_rows: list[dict], *, section: dict) -> dict[str, Any]:
    """Test perplexity of the n-gram model fitted on ``train_sentences`` (units already in the model's
    vocabulary): same units, same vocabulary and <unk> mapping, same targets as the LSTM."""
    from pipeline.models.vocab import PAD
    from pipeline.training.language_model import sentence_units

    order, smoothing = section["ngram_order"], section["ngram_smoothing"]
    known = set(loaded.vocab.itos)
    test_sentences = [map_to_vocabulary(sentence_units(r, level=loaded.level), known=known) for r in test_rows]
    started = time.perf_counter()
    model = fit_ngram(
        train_sentences,
        vocabulary=[t for t in loaded.vocab.itos if t != PAD],
        order=order,
        smoothing=smoothing,
        discount=section["ngram_discount"],
    )
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    total, count, zeros = ngram_nll(model, test_sentences, order=order)
    score_seconds = time.perf_counter() - started
    if zeros:
        logger.warning(
            "The n-gram model gives probability 0 to %d test targets: its perplexity is infinite. "
            "With train_generator.min_count = 1 no training unit is <unk>, so test <unk> is unseen; use min_count >= 2.",
            zeros,
        )
    return {
        "perplexity": None if zeros else round(perplexity(total, count), 3),
        "order": order,
        "smoothing": smoothing,
        **({"discount": section["ngram_discount"]} if smoothing == "kneser_ney" else {}),
        "library": "nltk.lm " + ("KneserNeyInterpolated" if smoothing == "kneser_ney" else "WittenBellInterpolated"),
        "zero_probability_targets": zeros,
        "targets": count,
        "fit_seconds": round(fit_seconds, 3),
        "score_seconds": round(score_seconds, 3),
        "targets_per_second": round(count / max(score_seconds, 1e-9), 1),
    }


def _score_pretraining(ctx, loaded, test_rows: list[dict], *, lstm: dict, device) -> dict[str, Any]:
    """init = pretrained: the LM before fine-tuning, and an n-gram model fitted on the same text as the pretrained LM
    (KNBC's training articles + the sampled corpus), all on the fine-tuned model's vocabulary and test targets."""
    from pipeline.models.language_model import load_generator
    from pipeline.paths import EXTRA_TOKENS, PRETRAINED_GENERATOR_DIR, TOKENS
    from pipeline.training.pretrain_generator import pretraining_text, text_sentences

    pretrained = load_generator(ctx.input(PRETRAINED_GENERATOR_DIR), device=device)
    before = _score_lstm(pretrained, test_rows, device=device)
    text = pretraining_text(
        tokens_path=ctx.input(TOKENS),
        store_path=ctx.input(EXTRA_TOKENS),
        section=ctx.config["pretrain_lm"],
        generator=ctx.config["train_generator"],
        vocab=loaded.vocab,  # every row in the fine-tuned generator's vocabulary
    )
    ngram = _score_ngram(loaded, text_sentences(text), test_rows, section=ctx.section)
    if ngram["targets"] != lstm["targets"] or before["targets"] != lstm["targets"]:
        raise RuntimeError("The pretraining rows scored other targets than the LSTM")
    ratio = round(lstm["perplexity"] / ngram["perplexity"], 4) if ngram["perplexity"] else None
    logger.info("pretrained: LM before fine-tuning %.2f; n-gram on the pretraining text %s", before["perplexity"], ngram["perplexity"])
    return {
        "lm_before_fine_tuning": before,
        "ngram_same_text": ngram,
        "lstm_to_ngram_same_text_ratio": ratio,
        "lstm_vs_ngram_same_text": _noise(lstm, ngram),
        # <unk> shares in the generator's vocabulary: the held-apart documents (tokens + sentence ends), KNBC's test articles
        "dev_tokens": text.stats["dev_tokens"],
        "dev_unk_rate": text.stats["dev_unk_rate"],
        "knbc_test_unk_rate": text.stats["knbc_test_unk_rate"],
        "text": text.stats,
    }


def _samples(loaded, *, section: dict) -> list[dict[str, Any]]:
    """One sample per theme in turn (or unconditioned), no prompt."""
    from pipeline.data.labels import THEMES
    from pipeline.inference.generator import Generator

    generator = Generator(loaded)
    samples = []
    for index in range(section["num_samples"]):
        theme = THEMES[index % len(THEMES)] if loaded.theme_conditioned else None
        result = generator.generate(prompt="", num=1, theme=theme, seed=section["seed"] + index, **SAMPLE_SETTINGS)
        samples.append({"theme": theme, "seed": section["seed"] + index, "text": result.samples[0]})
    return samples


def _test_summary(loaded, test_rows: list[dict], *, targets: int) -> dict[str, Any]:
    from pipeline.training.language_model import sentence_units

    known = set(loaded.vocab.itos)
    test_units = [u for s in test_rows for u in sentence_units(s, level=loaded.level)]
    oov = sum(1 for u in test_units if u not in known)
    corpus_words = loaded.metrics.get("config", {}).get("vocab_size", 0)
    source = (
        f"not among the {corpus_words} most frequent words of KNBC's training text and the unlabelled corpus"
        if corpus_words
        else f"training units seen < {loaded.min_count} times"
    )
    return {
        "split": "test (articles held out from training)",
        "sentences": len(test_rows),
        "units": len(test_units),
        "targets": targets,
        "oov_units": oov,
        "oov_rate": round(oov / max(len(test_units), 1), 4),
        # <unk> among the targets (units + sentence ends), as the pretraining text's rates count them
        "unk_target_rate": round(oov / max(targets, 1), 4),
        "vocabulary_size": len(loaded.vocab),
        "unknown_word_handling": f"units outside vocab.json ({source}) -> <unk> for every model",
    }


def _score_seeds(loaded, test_rows: list[dict], *, device, ngram_perplexity: float | None) -> dict[str, Any]:
    """Every seed's model (``seeds/<seed>/``) on the same targets: ``per_seed`` and the mean ± std of the
    perplexities and of the ratio to the n-gram model; {} for a single-seed generator."""
    from pipeline.metrics import mean_std
    from pipeline.models.language_model import load_generator
    from pipeline.models.model_dir import seed_model_dirs

    runs = []
    for directory in seed_model_dirs(loaded.directory):
        model = load_generator(directory, device=device)
        scored = _score_lstm(model, test_rows, device=device)
        runs.append(
            {
                "seed": int(directory.name),
                "dev_perplexity": model.metrics.get("dev_perplexity"),
                "perplexity": scored["perplexity"],
                **({"perplexity_with_theme": scored["perplexity_with_theme"]} if "perplexity_with_theme" in scored else {}),
            }
        )
    if not runs:
        return {}
    spread: dict[str, Any] = {"seeds": len(runs), "saved_seed": loaded.metrics.get("seed"), "per_seed": runs}
    for key in ("perplexity", "perplexity_with_theme"):
        if all(key in run for run in runs):
            mean, std = mean_std(run[key] for run in runs)
            spread[f"{key}_mean"], spread[f"{key}_std"] = round(mean, 3), round(std, 3)
    if ngram_perplexity:
        mean, std = mean_std(run["perplexity"] / ngram_perplexity for run in runs)
        spread["ratio_to_ngram_mean"], spread["ratio_to_ngram_std"] = round(mean, 4), round(std, 4)
    return spread


def _noise(lstm: dict[str, Any], ngram: dict[str, Any]) -> dict[str, Any] | None:
    """LSTM (mean over seeds) against a deterministic n-gram model: the difference and whether it is within noise."""
    from pipeline.metrics import within_noise

    if ngram.get("perplexity") is None:
        return None
    mean, std = lstm.get("perplexity_mean", lstm["perplexity"]), lstm.get("perplexity_std", 0.0)
    return {
        "difference": round(mean - ngram["perplexity"], 3),
        "spread": std,
        "within_noise": within_noise(mean_a=mean, std_a=std, mean_b=ngram["perplexity"], std_b=0.0),
    }


def evaluate_generator_stage(ctx) -> dict[str, Any]:
    import torch

    from pipeline.models.language_model import load_generator
    from pipeline.models.runtime import pick_device
    from pipeline.paths import GENERATOR_DIR, GENERATOR_REPORT, GENERATOR_TABLE, TOKENS
    from pipeline.text.tokenize import read_token_rows

    section = ctx.section
    device = pick_device("auto")
    loaded = load_generator(ctx.input(GENERATOR_DIR), device=device)
    rows = list(read_token_rows(ctx.input(TOKENS)))
    test_rows = [r for r in rows if r["split"] == "test"]
    lstm = _score_lstm(loaded, test_rows, device=device)
    ngram = _score_ngram(loaded, _unit_sentences(loaded, [r for r in rows if r["split"] == "train"]), test_rows, section=section)
    if ngram["targets"] != lstm["targets"]:
        raise RuntimeError(f"LSTM and n-gram scored different numbers of targets ({lstm['targets']} vs {ngram['targets']})")
    ngram_ppl = ngram["perplexity"]
    lstm.update(_score_seeds(loaded, test_rows, device=device, ngram_perplexity=ngram_ppl))
    report = {
        "lstm": lstm,
        "ngram": ngram,
        "lstm_to_ngram_ratio": round(lstm["perplexity"] / ngram_ppl, 4) if ngram_ppl else None,
        "lstm_vs_ngram": _noise(lstm, ngram),
        "test": _test_summary(loaded, test_rows, targets=lstm["targets"]),
        "sampling": SAMPLE_SETTINGS,
        "samples": _samples(loaded, section=section),
        "torch_version": torch.__version__,
    }
    if ctx.config["train_generator"]["init"] == "pretrained":
        report["pretraining"] = _score_pretraining(ctx, loaded, test_rows, lstm=lstm, device=device)
    write_json(ctx.output(GENERATOR_REPORT), report)
    with atomic_open(ctx.output(GENERATOR_TABLE), encoding="utf-8") as handle:
        handle.write(generator_table(report, init=ctx.config["train_generator"]["init"]))
    logger.info(
        "test perplexity: LSTM %.2f, %d-gram %s %s", lstm["perplexity"], section["ngram_order"], section["ngram_smoothing"], ngram_ppl
    )
    return _stage_summary(report)


def _figure(row: dict[str, Any], key: str = "perplexity") -> str:
    """``mean ± std (n seeds)`` for a row with seeds, the figure alone otherwise; ``-`` when missing."""
    if f"{key}_mean" in row:
        return f"{row[f'{key}_mean']:.2f} ± {row[f'{key}_std']:.2f}"
    if row.get("zero_probability_targets"):  # an n-gram model that never saw some vocabulary words
        return f"infinite ({row['zero_probability_targets']} targets get probability 0)"
    return f"{row[key]:.2f}" if row.get(key) is not None else "-"


def generator_table(report: dict[str, Any], *, init: str) -> str:
    """``models/report/generator.md``: every language model's test perplexity on the same targets, with its noise."""
    lstm, ngram, test = report["lstm"], report["ngram"], report["test"]
    pretraining = report.get("pretraining")
    seeds = lstm.get("seeds", 1)
    lines = [
        "# Generator: test perplexity",
        "",
        f"Test split: {test['sentences']} sentences of articles held out from training, {test['targets']} targets (every token and "
        f"sentence end), vocabulary {test['vocabulary_size']} (`<unk>` for the rest: {test['oov_rate']:.1%} of the test tokens). "
        "Every row scores the same targets with the same vocabulary. LSTM rows: mean ± std over the seeds (population std), "
        "*kept* = the saved model (median dev perplexity); no theme information (the n-gram models have none).",
        "",
        "| model | seeds | test perplexity | kept | with the theme |",
        "|---|---|---|---|---|",
        f"| LSTM, {'pretrained + fine-tuned' if init == 'pretrained' else 'from scratch'} | {seeds} | {_figure(lstm)} | "
        f"{lstm['perplexity']:.2f} | {_figure(lstm, 'perplexity_with_theme')} |",
    ]
    if pretraining:
        lines.append(f"| LSTM, pretrained only (before fine-tuning) | 1 | {_figure(pretraining['lm_before_fine_tuning'])} | | |")
    lines.append(f"| {ngram['order']}-gram {ngram['smoothing']}, KNBC training articles | 1 | {_figure(ngram)} | | |")
    if pretraining:
        lines.append(
            f"| {ngram['order']}-gram {ngram['smoothing']}, the pretraining text | 1 | {_figure(pretraining['ngram_same_text'])} | | |"
        )
    lines.append("")
    lines += _ratio_lines(report, lstm)
    lines += _unk_lines(report)
    return "\n".join(lines) + "\n"


def _unk_lines(report: dict[str, Any]) -> list[str]:
    """The share of ``<unk>`` targets (tokens and sentence ends) in the generator's vocabulary, per text."""
    test, pretraining = report["test"], report.get("pretraining")
    lines = [
        "",
        f"`<unk>` in the generator's vocabulary ({test['vocabulary_size']} entries):",
        "",
        "| text | targets | `<unk>` share |",
        "|---|---|---|",
    ]
    if "unk_target_rate" in test:
        lines.append(f"| KNBC test (the targets above) | {test['targets']} | {test['unk_target_rate']:.2%} |")
    if pretraining and pretraining.get("dev_unk_rate") is not None:
        lines.append(f"| pretraining text, held-apart documents | {pretraining['dev_tokens']} | {pretraining['dev_unk_rate']:.2%} |")
    return lines


def _ratio_lines(report: dict[str, Any], lstm: dict[str, Any]) -> list[str]:
    """The LSTM against each n-gram model: ratio, and whether the difference is within noise."""
    lines = []
    comparisons = [("KNBC training articles", report["ngram"])]
    if report.get("pretraining"):
        comparisons.append(("the pretraining text (same text as the pretrained LSTM)", report["pretraining"]["ngram_same_text"]))
    for name, ngram in comparisons:
        if ngram.get("perplexity") is None:
            continue
        noise = _noise(lstm, ngram)
        verdict = "within noise" if noise["within_noise"] else f"{'below' if noise['difference'] < 0 else 'above'} by more than the spread"
        ratio = lstm.get("perplexity_mean", lstm["perplexity"]) / ngram["perplexity"]
        lines.append(f"- LSTM / n-gram on {name}: {ratio:.3f}× ({noise['difference']:+.2f}, spread {noise['spread']:.2f}: {verdict})")
    return lines


def _stage_summary(report: dict[str, Any]) -> dict[str, Any]:
    lstm, ngram_ppl = report["lstm"], report["ngram"]["perplexity"]
    summary = {
        "lstm_perplexity": lstm["perplexity"],
        "ngram_perplexity": ngram_ppl if ngram_ppl is not None else "inf",
        "ratio": report["lstm_to_ngram_ratio"] if ngram_ppl is not None else "n/a",
        "ngram_score_seconds": report["ngram"]["score_seconds"],
    }
    if "perplexity_mean" in lstm:
        summary.update(lstm_perplexity_mean=lstm["perplexity_mean"], lstm_perplexity_std=lstm["perplexity_std"], seeds=lstm["seeds"])
    return summary
