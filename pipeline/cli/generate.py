"""``jpipe generate``: sample Japanese text from the trained LSTM generator."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipeline.cli._app import app, state
from pipeline.errors import ConfigError

# --model-dir of generate and score
ModelDirOption = Annotated[
    str | None,
    typer.Option(
        "--model-dir",
        help="Another generator model directory, e.g. models/pretrained_generator or models/generator/seeds/14. Default: models/generator.",
    ),
]


@app.command()
def generate(
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="Text to continue (tokenized by GiNZA like the corpus). Empty: start a new sentence.")
    ] = "",
    num: Annotated[int, typer.Option("--num", "-n", min=1, help="Number of samples.")] = 3,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Stop after this many new tokens if no sentence end came.")] = 60,
    temperature: Annotated[
        float,
        typer.Option("--temperature", "-t", help=">= 0. Lower is safer, higher more varied; 0 = greedy (always the most likely token)."),
    ] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k most likely tokens (0 = off).")] = 40,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass in (0, 1] (1 = off).")] = 0.9,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed: the same seed gives the same text. Default: a fresh random seed.")
    ] = None,
    theme: Annotated[
        str | None,
        typer.Option(
            "--theme", help="Write in the style of one theme: Gourmet (グルメ), Keitai (携帯電話), Kyoto (京都観光), Sports (スポーツ)."
        ),
    ] = None,
    model_dir: ModelDirOption = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help='Print {"samples": [...], ...} as JSON.')] = False,
) -> None:
    """Generate text in the style of the corpus with the trained LSTM language model.

    Example: jpipe generate --prompt 京都の --num 3 --max-tokens 60 --temperature 0.8 --top-k 40 --top-p 0.9 --seed 1 --theme Kyoto
    """
    from pipeline.inference.generator import Generator, validate_options

    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError("E109", f"Unknown device '{device}'.", hint="Valid devices: cpu, cuda, auto.")
    # Check the options before loading the model: a typo should fail at once.
    validate_options(temperature=temperature, top_k=top_k, top_p=top_p, num=num, max_tokens=max_tokens)
    generator = Generator.from_dir(generator_dir(model_dir), device=device)
    result = generator.generate(
        prompt, num=num, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, theme=theme
    )
    if as_json:
        typer.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
        return
    for text in result.samples:
        typer.echo(text)


@app.command()
def score(
    input_path: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="Texts to score: .txt (a text per line), .csv/.tsv or .jsonl (optionally .gz), or - for stdin."
        ),
    ],
    text_column: Annotated[str, typer.Option("--text-column", help="CSV/TSV column or JSONL field that holds the text.")] = "text",
    theme: Annotated[
        str | None, typer.Option("--theme", help="Score as text of one theme (Gourmet, Keitai, Kyoto, Sports). Default: any theme.")
    ] = None,
    model_dir: ModelDirOption = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: overall figures and per_line scores.")] = False,
) -> None:
    """Perplexity of the generator's language model on each text and overall, with the out-of-vocabulary rate.

    Lower is more fluent, more like the training text. Rank texts by fluency, or check the model on your own domain.

    Example: jpipe score reviews.txt
    """
    from pipeline.data.readers import read_records
    from pipeline.inference.generator import Generator

    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError("E109", f"Unknown device '{device}'.", hint="Valid devices: cpu, cuda, auto.")
    records = list(read_records(input_path, text_column=text_column))
    result = Generator.from_dir(generator_dir(model_dir), device=device).score(
        [r.text if not r.error else "" for r in records], theme=theme
    )
    for record, line in zip(records, result.lines, strict=True):
        if record.error:
            line.nll, line.reason = None, record.error
    typer.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2) if as_json else _score_table(result))


def generator_dir(model_dir: str | None):
    """``--model-dir`` (relative to the current directory), else the project's trained generator; checked before loading."""
    from pathlib import Path

    from pipeline.models.model_dir import require_model_dir
    from pipeline.paths import GENERATOR_DIR

    if model_dir is not None:
        return require_model_dir(Path(model_dir), train_hint="Give a directory that a generator stage wrote.")
    return require_model_dir(state.project_dir / GENERATOR_DIR, train_hint="Train it with `jpipe run train_generator`.")


def _score_table(result) -> str:
    rows = [f"{'perplexity':>10}  {'oov':>3}  text"]
    for line in result.lines:
        figure = f"{line.perplexity:10.2f}" if line.perplexity is not None else f"{'-':>10}"
        note = f"  ({line.reason})" if line.reason else ""
        rows.append(f"{figure}  {line.oov:>3}  {line.text}{note}")
    overall = "-" if result.perplexity is None else f"{result.perplexity:.2f}"
    rows.append(f"overall perplexity {overall} over {result.targets} targets; OOV rate {result.oov_rate:.1%}")
    return "\n".join(rows)
