"""Several seeds of one model: which seeds, where each checkpoints, which one is kept, how they are published.

A training stage with ``seeds`` > 1 trains seeds ``seed, seed + 1, ...`` through the one loop, each
with its own checkpoint (so a killed run resumes inside the seed it was training, and raising
``seeds`` later reuses the finished ones). The model directory the stage publishes is the seed
with the **median** dev score (never the best, and never chosen on test: the kept model is a
typical run); every seed's complete model directory goes to ``<output>/seeds/<seed>/`` for
evaluation to give test figures as mean ± std. With ``seeds = 1`` the stage writes exactly the
single model directory it wrote before seeds existed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.metrics import mean_std, median_index
from pipeline.paths import SEEDS_DIR
from pipeline.training import distributed
from pipeline.training.stage_io import TrainedModel, publish_model, tokenizer_settings, write_trained_model

logger = logging.getLogger(__name__)


def seed_list(section: dict) -> list[int]:
    """The seeds a section trains: ``seed, seed + 1, ...`` (``seeds`` of them)."""
    return [section["seed"] + offset for offset in range(section.get("seeds", 1))]


def seed_work_dir(work_dir: Path, *, seed: int, base_seed: int) -> Path:
    """Where seed ``seed`` checkpoints: the base seed in the stage work dir itself (where a single
    model always checkpointed, so its checkpoint still resumes), every other in ``seeds/<seed>``."""
    return Path(work_dir) if seed == base_seed else Path(work_dir) / SEEDS_DIR / str(seed)


def seed_section(section: dict, seed: int) -> dict:
    """The section one seed trains with: ``seed`` replaced, ``seeds`` left out (so the base seed's
    checkpoint signature is what it was before seeds existed, and adding seeds resumes the others)."""
    return {**{key: value for key, value in dict(section).items() if key != "seeds"}, "seed": seed}


def train_seeds(section: dict, *, work_dir: Path, name: str, train_one: Callable[..., TrainedModel]) -> list[TrainedModel]:
    """One model per seed of :func:`seed_list`: ``train_one(section=..., work_dir=..., name=...)`` with the
    seed's section and checkpoint directory (so each seed resumes on its own); each model's metrics gain ``seed``."""
    seeds = seed_list(section)
    trained = []
    for seed in seeds:
        model = train_one(
            section=seed_section(section, seed),
            work_dir=seed_work_dir(work_dir, seed=seed, base_seed=section["seed"]),
            name=name if len(seeds) == 1 else f"{name} seed {seed}",
        )
        model.metrics["seed"] = seed
        trained.append(model)
    return trained


def seed_summary(trained: list[TrainedModel], *, monitor: str) -> dict[str, Any]:
    """The dev ``monitor`` over the seeds and the one kept: the median (for an even count the lower
    middle value; the same rule whether higher or lower is better)."""
    dev = [model.metrics[monitor] for model in trained]
    mean, std = mean_std(dev)
    kept = median_index(dev)
    return {
        "seeds": [model.metrics["seed"] for model in trained],
        monitor: dev,
        f"{monitor}_mean": round(mean, 5),
        f"{monitor}_std": round(std, 5),
        "saved_seed": trained[kept].metrics["seed"],
        "saved_index": kept,
    }


def publish_seeds(
    ctx, output: str, trained: list[TrainedModel], *, token_field: str, monitor: str, config: dict, split_mode: str | None = None
) -> dict[str, Any]:
    """One seed: :func:`publish_model` as ever. Several: the median-dev seed as the model directory (its
    metrics.json gains ``seed_summary``) and every seed in ``seeds/<seed>/``; the stage summary gains
    ``seeds``, ``saved_seed`` and the dev mean and std."""
    if len(trained) == 1:
        return publish_model(ctx, output, trained[0], token_field=token_field, monitor=monitor, config=config, split_mode=split_mode)
    summary = seed_summary(trained, monitor=monitor)
    kept = trained[summary["saved_index"]]
    kept.metrics["seed_summary"] = summary
    stage_summary = publish_model(ctx, output, kept, token_field=token_field, monitor=monitor, config=config, split_mode=split_mode)
    if distributed.current().main:
        tokenizer = tokenizer_settings(project_dir=ctx.project_dir, token_field=token_field, split_mode=split_mode)
        for model in trained:
            directory = ctx.output(output) / SEEDS_DIR / str(model.metrics["seed"])
            write_trained_model(directory, model, tokenizer=tokenizer, config={**config, "seed": model.metrics["seed"]})
    logger.info(
        "%s: %s %.4f ± %.4f over seeds %s; kept seed %d (the median, %.4f)",
        ctx.stage.name,
        monitor,
        summary[f"{monitor}_mean"],
        summary[f"{monitor}_std"],
        summary["seeds"],
        summary["saved_seed"],
        kept.metrics[monitor],
    )
    return {
        **stage_summary,
        "seeds": len(trained),
        "saved_seed": summary["saved_seed"],
        f"{monitor}_mean": summary[f"{monitor}_mean"],
        f"{monitor}_std": summary[f"{monitor}_std"],
    }
