"""``jpipe generate``: sample Japanese text from the trained LSTM generator."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pipeline.cli._app import app, state
from pipeline.cli._inputs import (
    IdColumnOption,
    InputFileOption,
    InputFormatOption,
    MaxCharsOption,
    ReadOptions,
    TextColumnOption,
    TextFieldOption,
    TextOption,
    TextOrFileArgument,
    resolve_input,
)
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
    argument: TextOrFileArgument = None,
    input_path: InputFileOption = None,
    text: TextOption = None,
    text_column: TextColumnOption = None,
    text_field: TextFieldOption = None,
    id_column: IdColumnOption = None,
    input_format: InputFormatOption = None,
    max_chars: MaxCharsOption = 10_000,
    theme: Annotated[
        str | None, typer.Option("--theme", help="Score as text of one theme (Gourmet, Keitai, Kyoto, Sports). Default: any theme.")
    ] = None,
    model_dir: ModelDirOption = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or auto.")] = "cpu",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: overall figures and per_line scores (each with its id).")
    ] = False,
) -> None:
    """Perplexity of the generator's language model on each text and overall, with the out-of-vocabulary rate.

    Lower is more fluent, more like the training text. Rank texts by fluency, or check the model on your own domain.
    The input is one text (TEXT or --text), or a file of texts (FILE, --input FILE, or - for stdin; see docs/input.md).

    Examples: jpipe score reviews.txt, jpipe score "京都の寺は紅葉が綺麗だ。"
    """
    from pipeline.inference.generator import Generator

    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError("E109", f"Unknown device '{device}'.", hint="Valid devices: cpu, cuda, auto.")
    where = resolve_input(argument=argument, input_path=input_path, text=text, example="jpipe score reviews.txt")
    read = ReadOptions(input_format=input_format, text_column=text_column, text_field=text_field, id_column=id_column, max_chars=max_chars)
    records = list(where.records(read))
    result = Generator.from_dir(generator_dir(model_dir), device=device).score(
        [r.text if not r.error else "" for r in records], theme=theme
    )
    for record, line in zip(records, result.lines, strict=True):
        if record.error:
            line.nll, line.reason = None, record.error
    if not as_json:
        typer.echo(_score_table(result))
        return
    data = result.to_json()
    data["per_line"] = [{"id": record.id, **line} for record, line in zip(records, data["per_line"], strict=True)]
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


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
