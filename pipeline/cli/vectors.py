"""Word-vector commands: similar, similarity (incl. --pairs), analogy, vectors import/list, bench similarity.

Only typer, the standard library and light pipeline modules are imported here;
numpy and SudachiPy are imported inside the commands, and torch, spaCy and
gensim never are on the query path.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._app import app, bench_app, fail, reported, state, vectors_app
from pipeline.errors import InputError

SOURCES_HELP = "Vector source: word2vec, spacy, imported, ginza (ja_ginza's whole table) or combined."
AUTO_HELP = SOURCES_HELP + " auto: ginza when the project has it, else word2vec."
VectorsOption = Annotated[str, typer.Option("--vectors", "--source", "-V", help=SOURCES_HELP)]
AutoVectorsOption = Annotated[str, typer.Option("--vectors", "--source", "-V", help=AUTO_HELP)]
TopnOption = Annotated[int, typer.Option("--topn", "-n", min=1, help="How many neighbours to show.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _vectors(source: str):
    from pipeline.vectors.query import Vectors
    from pipeline.vectors.store import resolve_source

    return Vectors.from_project(project_dir=state.project_dir, source=resolve_source(state.project_dir, source))


def _describe(query: dict) -> str:
    keys = " + ".join(query["keys"])
    if query["how"] == "averaged":
        return f"{query['query']} -> average of {keys} (composed)"
    return query["query"] if keys == query["query"] else f"{query['query']} -> {keys}"


def _aliases(item: dict) -> str:
    """``(+N keys: a, b, c)`` for a row that other keys share (compact sources)."""
    others = item.get("keys_on_row", 1) - 1
    if others <= 0:
        return ""
    shown = ", ".join(item.get("aliases", []))
    return f"  (+{others} key{'s' if others > 1 else ''}: {shown}{', ...' if others > len(item.get('aliases', [])) else ''})"


def _print_neighbours(neighbours: list[dict]) -> None:
    width = max((_width(n["word"]) for n in neighbours), default=0)
    for rank, item in enumerate(neighbours, start=1):
        typer.echo(f"{rank:>3}  {_pad(item['word'], width)}  {item['score']:.4f}{_aliases(item)}")
    scores = [item["score"] for item in neighbours]
    if len(set(scores)) < len(scores) and "keys_on_row" not in neighbours[0]:
        typer.echo("(equal scores: those words share one vector; ja_ginza maps ~480k words onto 20k rows)")


def _print_same_row(result: dict) -> None:
    same = result.get("same_row_keys")
    if same and same["count"]:
        more = ", ..." if same["count"] > len(same["examples"]) else ""
        verb = "key shares this vector and is" if same["count"] == 1 else "keys share this vector and are"
        typer.echo(f"     ({same['count']} other {verb} left out: {', '.join(same['examples'])}{more})")


@app.command()
def similar(
    word: Annotated[str, typer.Argument(help="A word in any inflected form (食べた), or several words (averaged).", show_default=False)],
    topn: TopnOption = 10,
    vectors: AutoVectorsOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Nearest neighbours of WORD by cosine similarity.

    The word is normalized like the corpus (Sudachi normalized form by default:
    食べた -> 食べる, おいしい -> 美味しい). Several content words are averaged.
    Example: jpipe similar 京都 --topn 5 --vectors spacy
    """
    with reported():
        result = _vectors(vectors).similar_json(word, topn=topn)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    typer.echo(f"{_describe(result)}  ({result['vectors']})")
    _print_same_row(result)
    _print_neighbours(result["neighbours"])


@app.command()
def similarity(
    words: Annotated[list[str] | None, typer.Argument(help="Two words: W1 W2.", show_default=False)] = None,
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            help="Score a file of tab-separated word pairs ('-' = stdin): one output line per pair, null score when out of vocabulary.",
        ),
    ] = None,
    vectors: AutoVectorsOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Cosine similarity of two words, or of every pair in a file (--pairs FILE|-).

    With --pairs --json each pair gives one JSON line {"w1": .., "w2": .., "score": float or null};
    null means a word has no vector (the row says why in "reason"). Extra columns (such as a gold score) are ignored.
    Example: printf '京都\\t大阪\\n' | jpipe similarity --pairs - --json
    """
    if pairs is not None and words:
        fail("Give either two words or --pairs, not both.", hint="jpipe similarity 京都 大阪, or jpipe similarity --pairs pairs.tsv --json")
    if pairs is None and (not words or len(words) != 2):
        fail(
            f"similarity needs exactly two words, got {len(words or [])}.",
            hint="jpipe similarity 京都 大阪, or jpipe similarity --pairs FILE|- --json",
        )
    with reported():
        if pairs is not None:
            _score_pairs(pairs, vectors=vectors, as_json=as_json)
            return
        result = _vectors(vectors).similarity_json(words[0], words[1])
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    left = _describe({"query": words[0], "keys": result["keys1"], "how": "averaged" if result["composed1"] else "normalized"})
    right = _describe({"query": words[1], "keys": result["keys2"], "how": "averaged" if result["composed2"] else "normalized"})
    note = "  [same row: one and the same vector, the table cannot tell them apart]" if result["same_row"] else ""
    typer.echo(f"{result['score']:.4f}  {left} ~ {right}  ({result['vectors']}){note}")


def _score_pairs(pairs: str, *, vectors: str, as_json: bool) -> None:
    from pipeline.vectors.query import read_pairs

    if pairs == "-":
        rows = read_pairs(sys.stdin, name="stdin")
    else:
        path = Path(pairs)
        if not path.is_file():
            raise InputError("E205", f"Pairs file {path} does not exist.", hint="Give a file of WORD1<TAB>WORD2 lines, or - to read stdin.")
        with open(path, encoding="utf-8") as handle_:
            rows = read_pairs(handle_, name=str(path))
    table = _vectors(vectors)
    missing = 0
    for w1, w2 in rows:
        row = table.pair_json(w1, w2)
        missing += row["score"] is None
        if as_json:
            typer.echo(json.dumps(_pair_row(row), ensure_ascii=False))
        else:
            score = row["score"]
            typer.echo(f"{w1}\t{w2}\t{'NA' if score is None else f'{score:.4f}'}")
    typer.echo(f"{len(rows) - missing}/{len(rows)} pairs scored with {table.source}; {missing} out of vocabulary (score null).", err=True)


def _pair_row(row: dict) -> dict:
    """One --pairs JSON line: w1, w2, score; a null score adds code and reason, a shared vector same_row, an averaged word composed."""
    out = {"w1": row["w1"], "w2": row["w2"], "score": row["score"]}
    if row["score"] is None:
        return out | {"code": row["code"], "reason": row["reason"]}
    if row["same_row"]:
        out["same_row"] = True
    if row["composed1"] or row["composed2"]:
        out["composed"] = True
    return out


@app.command()
def analogy(
    a: Annotated[str, typer.Argument(help="A", show_default=False)],
    b: Annotated[str, typer.Argument(help="B (subtracted)", show_default=False)],
    c: Annotated[str, typer.Argument(help="C", show_default=False)],
    topn: TopnOption = 10,
    vectors: AutoVectorsOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Words closest to A - B + C (A, B and C themselves are left out).

    Example: jpipe analogy 京都 寺 神社  (what is to 神社 as 京都 is to 寺)
    """
    with reported():
        result = _vectors(vectors).analogy_json(a, b, c, topn=topn)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    keys = result["keys"]
    typer.echo(f"{' + '.join(keys['a'])} - {' + '.join(keys['b'])} + {' + '.join(keys['c'])}  ({result['vectors']})")
    _print_neighbours(result["neighbours"])


@vectors_app.command("import")
def import_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="word2vec text (.txt/.vec, .gz ok) or binary (.bin) file, gensim KeyedVectors (.kv), or fastText .bin.", show_default=False
        ),
    ],
    file_format: Annotated[str, typer.Option("--format", help="auto, text, binary, kv or fasttext.")] = "auto",
    token_field: Annotated[
        str, typer.Option("--token-field", help="Which token field the keys are: norm (chiVe), surface (fastText cc.ja), lemma.")
    ] = "norm",
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Keep only the first N words (files are sorted by frequency).")
    ] = None,
    layout: Annotated[
        str, typer.Option("--layout", help="gensim (also usable as embedding_init), compact (memory-mapped, large tables) or auto.")
    ] = "auto",
    as_json: JsonOption = False,
) -> None:
    """Import external vectors (chiVe, fastText, your own) as the 'imported' source.

    Written to models/vectors/imported/ atomically; use with --vectors imported,
    and (gensim layout) as embedding_init = "imported" for the classifiers and generator.
    Tables over 200,000 keys get the compact layout of the ginza source (auto).
    Example: jpipe vectors import chive-1.3-mc90.kv
    """
    from pipeline.vectors.store import import_vectors

    with reported():
        meta = import_vectors(
            project_dir=state.project_dir, path=path, file_format=file_format, token_field=token_field, limit=limit, layout=layout
        )
    if as_json:
        typer.echo(json.dumps(meta, ensure_ascii=False, indent=2))
        return
    rows = f" on {meta['rows']:,} distinct rows" if "rows" in meta else ""
    typer.echo(
        f"imported {meta['vocab_size']:,} vectors{rows} of {meta['dim']} dimensions ({meta['format']}, keys = {meta['token_field']}) in {meta['import_seconds']:.1f}s"
    )
    coverage = meta.get("coverage")
    if coverage:
        typer.echo(
            f"corpus coverage: {100 * coverage['type_coverage']:.1f}% of word types, {100 * coverage['token_coverage']:.1f}% of tokens"
        )


@vectors_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """The vector sources of the project with their size, dimensions and corpus coverage."""
    from pipeline.io import read_json
    from pipeline.vectors.store import META_FILENAME, source_dir, source_names

    rows = {}
    for name in source_names():
        meta_path = source_dir(state.project_dir, name) / META_FILENAME
        rows[name] = read_json(meta_path) if meta_path.exists() else None
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for name, meta in rows.items():
        if meta is None:
            typer.echo(f"{name:9s} -")
            continue
        coverage = meta.get("coverage", {})
        text = f"{name:9s} {meta['vocab_size']:>8,} words x {meta['dim']:>3} dims  keys={meta.get('token_field')}"
        if "rows" in meta:
            text += f"  ({meta['rows']:,} distinct rows, memory-mapped)"
        if coverage:
            text += f"  corpus coverage: types {100 * coverage['type_coverage']:.1f}%, tokens {100 * coverage['token_coverage']:.1f}%"
        typer.echo(text)


@bench_app.command("similarity")
def bench_similarity(
    vectors: AutoVectorsOption = "auto",
    word: Annotated[str, typer.Option("--word", help="Query of the cold runs.")] = "京都",
    cold_runs: Annotated[int, typer.Option("--cold-runs", min=1, help="Fresh `python -m pipeline similar` processes to time.")] = 3,
    warm_queries: Annotated[int, typer.Option("--warm-queries", min=1, help="Queries timed in one warm process.")] = 300,
    as_json: JsonOption = False,
) -> None:
    """Cold and warm latency of `jpipe similar`, and its peak memory (also: `jpipe bench similar`).

    Targets (issue 10): cold <= 1.5 s from process start to answer, warm <= 5 ms per query
    on the full table, peak RSS <= 1.2 GB.
    """
    from pipeline.bench.similar import benchmark_similar

    with reported():
        result = benchmark_similar(project_dir=state.project_dir, source=vectors, word=word, cold_runs=cold_runs, warm_queries=warm_queries)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    _print_bench(result, word=word)


bench_app.command("similar", hidden=True)(bench_similarity)


def _print_bench(result: dict, *, word: str) -> None:
    cold, warm, synthetic, targets = result["cold"], result["warm"], result["synthetic_20k"], result["targets"]
    typer.echo(f"source {result['source']}: {result['keys']:,} keys on {result['vocab_size']:,} rows x {result['dim']} dims")
    runs = ", ".join(f"{s:.2f}" for s in cold["runs_s"])
    typer.echo(f"cold  `jpipe similar {word}`: median {cold['median_s']:.2f}s  (runs: {runs})  target <= {targets['cold_s']}s")
    typer.echo(f"peak RSS of the cold runs: {cold['peak_rss_mb']:.0f} MB  target <= {targets['peak_rss_mb']:.0f} MB")
    typer.echo(
        f"warm  key query:  median {warm['key']['median_ms']:.2f} ms, p95 {warm['key']['p95_ms']:.2f} ms  target <= {targets['warm_ms']} ms"
    )
    typer.echo(f"warm  text query: median {warm['text']['median_ms']:.2f} ms, p95 {warm['text']['p95_ms']:.2f} ms (includes Sudachi)")
    typer.echo(f"20k x {synthetic['dim']} random table: median {synthetic['median_ms']:.2f} ms, p95 {synthetic['p95_ms']:.2f} ms")
    typer.echo("meets targets: " + ("yes" if result["meets_targets"] else "NO"))
