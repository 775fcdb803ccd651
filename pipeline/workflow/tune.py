"""``jpipe tune TASK``: an Optuna study over a task's classifier settings, stored in the project.

* The space is :data:`pipeline.config.search_space.SEARCH_SPACE` (narrowed by ``[tune] params``), less what the
  project cannot use: vector sources that are not built, ``init = "pretrained"`` without the language models.
* Each trial trains ONE seed of the task's classifier (``[classifier]`` + the task's overrides + the trial's
  values, ``seeds = 1``) on the train split, through the one training loop, and scores dev macro-F1. The test
  split is never read. The loop reports dev macro-F1 after every epoch to the pruner (median or Hyperband), and a
  pruned trial stops there. Trials train in ``.jpipe/tune/TASK/trial-N/``, removed after each trial: the published
  model is never touched.
* The study lives in SQLite, ``.jpipe/tune.db`` (one study per task, named after it), so a killed study resumes:
  its unfinished trial is marked failed and left out, and trial ``n`` (counting finished trials) samples with a
  TPE sampler seeded ``[tune] seed + n``. With the median pruner a killed-then-resumed study therefore holds the
  same trials and the same best value as one that was never interrupted (training is deterministic on CPU).
* ``--trials N`` runs until the study holds N finished (complete or pruned) trials; ``--minutes M`` starts no
  trial after M minutes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.config.search_space import PRETRAINED_PINNED, Param, searched
from pipeline.errors import ConfigError, PipelineError, WorkflowError

logger = logging.getLogger(__name__)

STUDY_DB = ".jpipe/tune.db"
TRIALS_DIR = ".jpipe/tune"  # <task>/trial-<n>/: a trial's checkpoints, removed when it ends
TUNE_REPORT_DIR = "models/report/tune"  # <task>/: the plots of `jpipe tune TASK --report`
DEFAULT_TRIALS = 20  # without --trials or --minutes


def import_optuna():
    """Optuna, imported when a study is opened (an extra: pip install 'jpipe[tune]'); ``ConfigError`` E110 without it."""
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError(
            "E110", f"jpipe tune needs Optuna, which is not installed ({exc}).", hint="Install it: pip install 'jpipe[tune]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def study_path(project_dir: Path) -> Path:
    return Path(project_dir) / STUDY_DB


def _corrupt(path: Path, exc: Exception) -> WorkflowError:
    return WorkflowError(
        "E431",
        f"{path} is not a readable tuning study database ({type(exc).__name__}: {exc}).",
        hint=f"Delete {path} to start the studies again (their trials are lost).",
    )


def _sampler(optuna, *, seed: int, startup: int):
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _pruner(optuna, tune, *, epochs: int):
    if tune["pruner"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune["startup_trials"], n_warmup_steps=tune["warmup_epochs"])
    if tune["pruner"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, tune["warmup_epochs"]), max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def open_study(project_dir: Path, task: str, *, config: Config | None = None, create: bool = False, fresh: bool = False):
    """The study of ``task`` in ``.jpipe/tune.db``: created (or resumed) with ``create``, else loaded (E430 when absent).

    ``fresh``: the task's study is deleted first (the whole file when it cannot be read). A file that is not a
    study database raises ``WorkflowError`` E431, which names it.
    """
    optuna = import_optuna()
    path = study_path(project_dir)
    if fresh and path.exists():
        _delete_study(optuna, path, task)
    if not create and not path.exists():
        raise _no_study(task, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 60}})
        if not create:
            return optuna.load_study(study_name=task, storage=storage)
        tune = config["tune"]
        epochs = tune["epochs"] or config.classifier_for(task)["epochs"]
        return optuna.create_study(
            study_name=task,
            storage=storage,
            direction="maximize",
            sampler=_sampler(optuna, seed=tune["seed"], startup=tune["startup_trials"]),
            pruner=_pruner(optuna, tune, epochs=epochs),
            load_if_exists=True,
        )
    except KeyError:
        raise _no_study(task, path) from None
    except PipelineError:
        raise
    except Exception as exc:  # sqlite3 / SQLAlchemy / Alembic errors of a damaged or foreign file
        raise _corrupt(path, exc) from exc


def _no_study(task: str, path: Path) -> WorkflowError:
    return WorkflowError("E430", f"No tuning study of task '{task}' in {path}.", hint=f"Run `jpipe tune {task}` first.")


def _delete_study(optuna, path: Path, task: str) -> None:
    try:
        optuna.delete_study(study_name=task, storage=f"sqlite:///{path}")
        logger.info("deleted the study of %s from %s", task, path)
    except KeyError:
        pass  # no study of this task yet
    except Exception:  # not a readable study database: start a new file
        path.unlink()
        logger.info("removed %s (not a readable study database)", path)


def finished_trials(study) -> list:
    """The complete and pruned trials (a failed or interrupted trial does not count)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def fail_interrupted(study) -> int:
    """Mark the trials a killed run left RUNNING as failed (the sampler and pruner ignore them); returns how many."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        logger.warning("trial %d of %s was interrupted: marked failed, it does not count", trial.number, study.study_name)
    return len(running)


# ------------------------------------------------------------------ one trial
class TrialRunner:
    """The objective: one seed of ``task``'s classifier with a trial's values, scored on dev macro-F1."""

    def __init__(self, *, project_dir: Path, config: Config, task: str) -> None:
        from pipeline.workflow.stage import StageContext
        from pipeline.workflow.stages import build_stages

        self.project_dir, self.config, self.task = Path(project_dir), config, task
        tune = config["tune"]
        base = config.classifier_for(task)
        one_seed = {"seeds": 1, **({"ensemble": False} if "ensemble" in base else {})}  # a trial trains one model
        self.base = dataclasses.replace(base, **one_seed, epochs=tune["epochs"] or base["epochs"])
        stage = next((s for s in build_stages(config) if s.name == f"train_{task}"), None)
        if stage is None:
            raise ConfigError("E132", f"Task '{task}' has no training stage (is it disabled?).", hint=f"Set tasks.{task}.enabled = true.")
        self.work_root = self.project_dir / TRIALS_DIR / task
        self.ctx = StageContext(
            stage=stage, project_dir=self.project_dir, config=config, staging_dir=self.work_root, work_dir=self.work_root
        )
        self._data: dict[str, Any] = {}
        self.space = self._usable_space()

    def _usable_space(self) -> dict[str, Param]:
        """``[tune] params``' space less the choices this project cannot train with."""
        from pipeline.data.tasks import lm_dir_for
        from pipeline.paths import VECTOR_SOURCES
        from pipeline.training.stage_io import VECTORS_FILENAME

        space = dict(searched(self.config["tune"]["params"]))
        usable = {"random"} | {s for s in VECTOR_SOURCES if (self.project_dir / VECTOR_SOURCES[s] / VECTORS_FILENAME).exists()}
        pretrained = self.config.with_values({f"tasks.{self.task}.classifier.init": "pretrained"})
        lm_dir = self.project_dir / lm_dir_for(pretrained, self.task)
        has_lm = all((lm_dir / direction / "model.safetensors").exists() for direction in ("forward", "backward"))
        allowed = {"embedding_init": usable, "init": {"scratch", "pretrained"} if has_lm else {"scratch"}}
        for key, values in allowed.items():
            if key in space:
                choices = tuple(c for c in space[key].choices if c in values)
                space[key] = dataclasses.replace(space[key], choices=choices)
                if len(choices) < 2:
                    logger.info("tune: %s not searched (only %s usable in this project)", key, list(choices) or "the configured value")
                    del space[key]
        return space

    def configured(self) -> dict[str, Any]:
        """The task's configured values of the searched keys that lie in the space (the study's first trial)."""
        values = {}
        for key, param in self.space.items():
            value = self.base[key]
            if key in PRETRAINED_PINNED and self.base["init"] == "pretrained":
                continue
            if (param.kind == "float" and param.low <= value <= param.high) or (param.kind == "choice" and value in param.choices):
                values[key] = value
        return values

    def suggest(self, trial, space: dict[str, Param]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, param in space.items():
            if key in PRETRAINED_PINNED and values.get("init") == "pretrained":
                continue  # the language models were trained with the configured value
            if param.kind == "float":
                values[key] = trial.suggest_float(key, param.low, param.high, log=param.log)
            else:
                values[key] = trial.suggest_categorical(key, list(param.choices))
        return values

    def data(self, section):
        """The encoded splits for ``section``'s embedding source (built once per source)."""
        from pipeline.data.tasks import label_field, task_labels, task_rows_file
        from pipeline.training.classifier import prepare_task_data
        from pipeline.training.stage_io import pretrained_vectors_file

        source = section["embedding_init"]
        if source not in self._data:
            spec = self.config.task(self.task)
            tokens = self.ctx.input(task_rows_file(self.config, self.task))
            vectors = pretrained_vectors_file(self.ctx, section_name=f"tasks.{self.task}.classifier", source=source)
            labels = task_labels(self.project_dir, task=self.task, section=spec, tokens_path=tokens)
            self._data[source] = prepare_task_data(
                tokens_path=tokens, labels=labels, label_field=label_field(spec), section=section, vectors_file=vectors
            )
        return self._data[source]

    def __call__(self, trial) -> float:
        from pipeline.training.classifier import train_classifier

        values = self.suggest(trial, self.space)
        section = dataclasses.replace(self.base, **values)  # validated: contradicting values raise E108
        lm_dir = None
        if section["init"] == "pretrained":
            from pipeline.data.tasks import lm_dir_for

            lm_dir = self.ctx.input(lm_dir_for(self.config.with_values({f"tasks.{self.task}.classifier.init": "pretrained"}), self.task))
        work = self.work_root / f"trial-{trial.number}"
        shutil.rmtree(work, ignore_errors=True)
        started = time.perf_counter()
        try:
            trained = train_classifier(
                task=self.task,
                section=section,
                data=self.data(section),
                work_dir=work,
                resume=False,
                signature="tune",
                lm_dir=lm_dir,
                name=f"{self.task} trial {trial.number}",
                on_epoch=_pruning_callback(trial),
            )
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
            shutil.rmtree(work, ignore_errors=True)
        trial.set_user_attr("best_epoch", trained.metrics["best_epoch"])
        trial.set_user_attr("epochs_run", trained.metrics["epochs_run"])
        return float(trained.metrics["dev_macro_f1"])


def _pruning_callback(trial) -> Callable[[dict[str, Any]], None]:
    def report(record: dict[str, Any]) -> None:
        import optuna

        trial.report(float(record["dev_macro_f1"]), step=int(record["epoch"]))
        if trial.should_prune():
            trial.set_user_attr("pruned_at_epoch", int(record["epoch"]))
            raise optuna.TrialPruned(f"dev macro-F1 {record['dev_macro_f1']} at epoch {record['epoch']}")

    return report


# ------------------------------------------------------------------ the study
def run_study(
    *,
    project_dir: Path,
    config: Config,
    task: str,
    trials: int | None = None,
    minutes: float | None = None,
    fresh: bool = False,
    progress: Callable[[Any, Any, int | None], None] | None = None,
):
    """Run (or resume) ``task``'s study until it holds ``trials`` finished trials or ``minutes`` have passed.

    ``progress(trial, study, target)`` is called after every trial. Returns the study.
    """
    optuna = import_optuna()
    config.task(task)  # E132 for an unknown task
    runner = TrialRunner(project_dir=project_dir, config=config, task=task)
    study = open_study(project_dir, task, config=config, create=True, fresh=fresh)
    fail_interrupted(study)
    if not study.trials:  # a new study starts from the configured settings: the baseline every trial is compared with
        study.enqueue_trial(runner.configured())
    _check_base(study, runner)
    target = trials if trials is not None else (None if minutes is not None else DEFAULT_TRIALS)
    deadline = time.monotonic() + minutes * 60 if minutes is not None else None
    runner.work_root.mkdir(parents=True, exist_ok=True)
    try:
        while target is None or len(finished_trials(study)) < target:
            if deadline is not None and time.monotonic() >= deadline:
                break
            # seeded by the number of finished trials: a resumed study samples as an uninterrupted one would
            study.sampler = _sampler(
                optuna, seed=config["tune"]["seed"] + len(finished_trials(study)), startup=config["tune"]["startup_trials"]
            )
            study.optimize(runner, n_trials=1, gc_after_trial=True)
            if progress is not None:
                progress(study.trials[-1], study, target)
    finally:
        shutil.rmtree(runner.work_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            runner.work_root.parent.rmdir()  # .jpipe/tune/, when no other task's study runs
    return study


def _check_base(study, runner: TrialRunner) -> None:
    """Record what the trials share (the settings outside the space, the task's data); warn when it changed."""
    import json

    from pipeline.io import sha256_text

    fixed = {key: value for key, value in runner.base.to_dict().items() if key not in runner.space}
    base = sha256_text(json.dumps({"fixed": fixed, "task": runner.config.task(runner.task).to_dict()}, sort_keys=True, default=str))
    earlier = study.user_attrs.get("base")
    if earlier is not None and earlier != base:
        logger.warning(
            "%s: the settings outside the search (or the task's data keys) changed since this study began; its earlier "
            "trials were trained with the old ones. `jpipe tune %s --fresh` starts a new study.",
            runner.task,
            runner.task,
        )
    study.set_user_attr("base", base)
    study.set_user_attr("space", list(runner.space))


def best_params(study) -> dict[str, Any]:
    """The values of the best complete trial; ``WorkflowError`` E430 when no trial has finished."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise WorkflowError(
            "E430",
            f"The tuning study of task '{study.study_name}' has no finished trial yet.",
            hint=f"Run `jpipe tune {study.study_name}` until at least one trial completes.",
        )
    return dict(study.best_trial.params)


# ------------------------------------------------------------------ --apply
def apply_params(project_dir: Path, task: str, values: dict[str, Any], *, profile: Any = None) -> Path:
    """Write ``values`` into ``[tasks.TASK.classifier]`` of jpipe.toml, keeping the rest of the file as it is.

    The new text is loaded as a config first (any error is raised before anything is written), the task's
    effective classifier must then hold ``values``, and the file is replaced atomically. Returns its path.
    """
    import tempfile

    from pipeline.config import CONFIG_FILENAME, load_config
    from pipeline.io import atomic_open

    path = Path(project_dir) / CONFIG_FILENAME
    values = {key: float(f"{value:.6g}") if isinstance(value, float) else value for key, value in values.items()}
    text = _with_task_values(path.read_text(encoding="utf-8") if path.exists() else "", task, values)
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / CONFIG_FILENAME).write_text(text, encoding="utf-8")
        effective = load_config(scratch, profile=profile).classifier_for(task)  # raises ConfigError before any write
    wrong = {key: effective[key] for key, value in values.items() if effective[key] != value}
    if wrong:  # a profile or a later layer would hide the written values
        raise ConfigError("E108", f"Writing the tuned values for '{task}' does not change its effective settings: {wrong}.")
    with atomic_open(path) as handle:
        handle.write(text)
    return path


def _with_task_values(text: str, task: str, values: dict[str, Any]) -> str:
    """``text`` (a jpipe.toml) with ``values`` set in ``[tasks.TASK.classifier]`` (tomlkit: comments and order kept)."""
    try:
        import tomlkit
    except ImportError as exc:
        raise ConfigError("E110", f"jpipe tune --apply needs tomlkit ({exc}).", hint="Install it: pip install 'jpipe[tune]'") from None
    document = tomlkit.parse(text)
    if "tasks" not in document:
        document["tasks"] = tomlkit.table(is_super_table=True)
    tasks = document["tasks"]
    if task not in tasks:
        tasks[task] = tomlkit.table(is_super_table=True)
    if "classifier" not in tasks[task]:
        tasks[task]["classifier"] = tomlkit.table()
    classifier = tasks[task]["classifier"]
    for key, value in values.items():
        classifier[key] = value
    return tomlkit.dumps(document)


# ------------------------------------------------------------------ --report
def trial_rows(study) -> list[dict[str, Any]]:
    """One row per trial: number, state, dev macro-F1 (a pruned trial's best epoch so far), params, seconds, epochs."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        value = trial.value
        if value is None and trial.intermediate_values:
            value = max(trial.intermediate_values.values())
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name.lower(),
                "dev_macro_f1": round(value, 5) if value is not None else None,
                "epochs": trial.user_attrs.get("epochs_run", trial.last_step),
                "seconds": trial.user_attrs.get("seconds"),
                "params": dict(trial.params),
            }
        )
    return rows


def write_plots(study, out_dir: Path) -> list[Path]:
    """The optimisation history and (with 2+ complete trials) the parameter importances as PNGs in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    from pipeline.io import atomic_path

    best_params(study)  # E430 when nothing has finished
    plots = {
        "optimization_history.png": optuna_plots.plot_optimization_history,
        "param_importances.png": optuna_plots.plot_param_importances,
    }
    written = []
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's "experimental" notes and small-study importances
                axes = plot(study)
        except (ValueError, RuntimeError) as exc:  # importances need 2+ complete trials over varying values
            logger.warning("%s not drawn: %s", name, exc)
            continue
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        with atomic_path(Path(out_dir) / name, suffix=".png") as tmp:
            figure.savefig(tmp, dpi=110, format="png")
        plt.close(figure)
        written.append(Path(out_dir) / name)
    return written
