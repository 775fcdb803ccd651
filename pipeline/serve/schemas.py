"""Request and response bodies of the HTTP API (pydantic models; they are also the OpenAPI schema at ``/docs``).

Requests forbid unknown fields (a typo such as ``"text"`` for ``"texts"`` is a 422, not
silently ignored) and NaN/Infinity. Limits that come from the ``[serve]`` config (texts
per request, characters per text, tokens per generation) are checked by the service,
since they are not known when this module is imported.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# A task name: KNBC's topic and sentiment, or a user task from [tasks.NAME]; an unloaded one is E331 (404).
Task = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
MAX_SEED = 2**63 - 1


def _no_lone_surrogates(value: str) -> str:
    """JSON can carry ``"\\ud800"``: such a string has no UTF-8 form, so no tokenizer or reply can use it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (it has a lone surrogate code point)") from None
    return value


Word = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(_no_lone_surrogates)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ------------------------------------------------------------------ classify
class ClassifyRequest(Request):
    texts: list[str] = Field(min_length=1, description="Reviews to classify; a bad one gets a per-row error, the others are answered.")
    tasks: list[Task] | None = Field(None, min_length=1, description="Tasks to run (default: every classifier the server loaded).")
    explain: bool = Field(False, description="Add the tokens and their attention weights (summing to 1) per task.")

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [{"texts": ["駅前のラーメン屋はスープが美味しかった。"], "tasks": ["topic", "sentiment"], "explain": False}]
        },
    )


class TaskResult(BaseModel):
    label: str
    probabilities: dict[str, float]
    tokens: list[str] | None = Field(None, description="Surface tokens (with explain).")
    weights: list[float] | None = Field(None, description="Attention weight per token, summing to 1 (with explain).")


class RowError(BaseModel):
    code: str
    message: str


class ClassifyRow(BaseModel):
    index: int = Field(description="Position of the text in the request.")
    tasks: dict[str, TaskResult] = Field(description="Result per task; empty when the row has an error.")
    language: str | None = Field(
        None, description='"ja", or "other" when the text is not Japanese (its labels are kept, with a warning); null with an error.'
    )
    warning: str | None = Field(None, description="Why the labels should not be trusted (e.g. not Japanese); null for Japanese text.")
    error: RowError | None = None


class ClassifyResponse(BaseModel):
    results: list[ClassifyRow]
    model: dict = Field(description="Labels and format version per task, and how many texts shared the forward pass.")


# ------------------------------------------------------------------ vectors
class Neighbour(BaseModel):
    word: str
    score: float
    keys_on_row: int | None = Field(
        None, description="Compact sources (ginza): how many keys share this neighbour's vector row (null elsewhere)."
    )
    aliases: list[str] | None = Field(None, description="Compact sources: a few other keys on the row (same vector, same score).")


class SimilarResponse(BaseModel):
    word: str
    source: str
    keys: list[str] = Field(description="Vector keys the query was looked up as (normalized forms).")
    composed: bool = Field(description="True when several content words were averaged into one query vector.")
    neighbours: list[Neighbour]


class SimilarityRequest(Request):
    pairs: list[tuple[Word, Word]] = Field(min_length=1, description='Word pairs, e.g. [["野球", "サッカー"]].')
    source: str | None = Field(
        None, description="auto, word2vec, spacy, imported, ginza or combined (default auto: ginza, else word2vec, else the first loaded)."
    )


class SimilarityResponse(BaseModel):
    source: str
    scores: list[float | None] = Field(description="Cosine per pair (4 digits); null when a word is not in the vocabulary.")
    same_row: list[bool | None] = Field(
        default_factory=list, description="Per pair: true when both words are one and the same vector (a shared row); null when unscored."
    )
    errors: list[RowError | None] = Field(description="Why a score is null, per pair.")


class AnalogyRequest(Request):
    a: Word
    b: Word
    c: Word
    topn: int = Field(10, ge=1)
    source: str | None = None

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"a": "京都", "b": "寺", "c": "神社", "topn": 5}]})


class AnalogyResponse(BaseModel):
    a: str
    b: str
    c: str
    source: str
    neighbours: list[Neighbour] = Field(description="Words closest to a - b + c.")


# ------------------------------------------------------------------ extract
class ExtractRequest(Request):
    texts: list[str] = Field(min_length=1, description="Sentences; a bad one gets a per-row error, the others are answered.")
    beam: int = Field(1, ge=1, le=5, description="Beam width (1 = greedy decoding).")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"texts": ["カリヨンというレンタサイクルがお薦めである。"], "beam": 1}]}
    )


# ------------------------------------------------------------------ generate
class GenerateRequest(Request):
    prompt: Annotated[str, AfterValidator(_no_lone_surrogates)] = Field("", max_length=10_000)
    theme: Annotated[str, AfterValidator(_no_lone_surrogates)] | None = Field(
        None, max_length=100, description="Gourmet, Keitai, Kyoto or Sports (or グルメ, 携帯電話, 京都観光, スポーツ)."
    )
    max_tokens: int | None = Field(None, ge=1, description="New tokens at most (default 60, or the server's limit when lower).")
    # le=100: far past any useful value, and below float32's range (a larger one overflows to inf in the sampler).
    temperature: float = Field(1.0, ge=0.0, le=100.0, description="0 = greedy (the most likely token each step).")
    top_k: int = Field(0, ge=0, le=1_000_000, description="Keep the k most likely tokens (0 = off).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (1 = off).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Same seed and options -> same text (default: drawn and returned).")
    num: int = Field(1, ge=1, description="Texts to write (1 when streaming).")
    stream: bool = Field(False, description='Server-Sent Events: data: {"token": ...} per piece, then data: {"done": true, "text": ...}.')


class GenerateResponse(BaseModel):
    text: str = Field(description="The first sample.")
    samples: list[str]
    seed: int
    theme: str | None
    prompt_tokens: list[str]
    oov_prompt_tokens: list[str]
    ended: list[str] = Field(description='"eos" or "max_tokens" per sample.')


# ------------------------------------------------------------------ service
class ErrorInfo(BaseModel):
    code: str
    kind: str
    message: str
    hint: str | None


class ErrorResponse(BaseModel):
    error: ErrorInfo


ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Malformed JSON (E240)."),
        (404, "Word not in the vocabulary (E208), model not loaded (E331)."),
        (413, "Body or item count over the server's limits (E242, E243)."),
        (422, "Body does not fit the schema (E241) or an option is invalid (E109, E247)."),
        (503, "Models still loading (E330) or server overloaded (E332)."),
    )
}
