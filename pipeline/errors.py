"""Errors users see: a stable code, a message that says what went wrong, a hint that says what to do.

Four kinds, by where the problem is:

* ``ConfigError``   (E1xx): a config value, section or key, or a library option;
* ``InputError``    (E2xx): data the user or the corpus supplies (files, rows, texts, words);
* ``ModelError``    (E3xx): a trained model or vector table (missing, wrong kind, newer format);
* ``WorkflowError`` (E4xx): the stage runner (unknown stage, lock held, missing stage input).

Every code is listed once in ``CODES`` with a one-line summary (the README's error table
is generated from it, and a test checks that every code raised is listed there and
matches its class). Hints speak in config keys and commands (``jpipe run``), never in
command-line flags: the same error reaches Python API and HTTP users, who pass no flags.
The CLI prints ``Error E102: ...`` and the hint, without a traceback.
"""

from __future__ import annotations

# code -> one-line summary. Blocks per area keep the numbering stable; never reuse a code.
CODES: dict[str, str] = {
    # --- E1xx config and options
    "E101": "Unknown config section.",
    "E102": "Unknown config key.",
    "E103": "Config value of the wrong type.",
    "E104": "Config value not among the allowed choices.",
    "E105": "Config value outside its allowed range.",
    "E106": "Malformed override (expected section.key=value).",
    "E107": "Config file is not valid TOML or not a table per section.",
    "E108": "Config values that contradict each other.",
    "E109": "Invalid option value passed to a library function.",
    "E110": "A required package or spaCy model is not installed.",
    "E111": "A config value names something unusable (a spaCy model without static vectors).",
    "E130": "Invalid task name.",
    "E131": "A task of that name already exists.",
    "E132": "Unknown task.",
    "E133": "A config section of an earlier version (train_topic, train_sentiment) that moved to [tasks.NAME.classifier].",
    "E134": "A built-in task cannot be removed (disable it instead).",
    "E135": "A task section without its data file.",
    "E140": "Unknown config profile.",
    "E141": "A setting needs a token field that the token store does not keep.",
    "E142": "The Ray cluster address cannot be reached or joined.",
    "E143": "Distributed training started without the environment torchrun sets (RANK, WORLD_SIZE, ...).",
    "E150": "A tuning search-space key that is not a [classifier] config key, or a [tune] value outside the search space.",
    # --- E2xx input data
    "E201": "Corpus source not found.",
    "E202": "Corpus download failed.",
    "E203": "Corpus archive is corrupt or unsafe.",
    "E204": "Corpus does not have the expected articles or sentences.",
    "E205": "Input file not found or unreadable.",
    "E206": "Input is not UTF-8 text.",
    "E207": "Input format unknown or malformed.",
    "E208": "Word or phrase not in the vector vocabulary.",
    "E209": "Too little data for the requested operation.",
    "E210": "A training or evaluation row has a label outside the task's labels.",
    "E220": "Unknown label name (theme or sentiment class).",
    "E235": "Input has no column or field of the given name.",
    "E236": "Text cannot be classified (empty, whitespace-only or without tokens).",
    "E237": "Input file has no rows to analyze (empty, or a header row alone).",
    "E240": "Request body is not valid JSON.",
    "E241": "Request does not match the endpoint's schema (missing field, wrong type or value out of range).",
    "E242": "Request body larger than the server's limit.",
    "E243": "Too many texts or pairs in one request.",
    "E244": "Text longer than the server's character limit.",
    "E245": "Request body is not sent as JSON (wrong content type).",
    "E246": "No such endpoint, or the endpoint does not take this method.",
    "E247": "Generation asks for more tokens or texts than the server allows.",
    "E250": "A task's labelled file does not exist.",
    "E251": "A task's labelled file is empty or has no usable rows.",
    "E252": "A task's labelled file has text that is not valid UTF-8.",
    "E253": "A task's labelled file has only one label.",
    "E254": "A label has fewer than 5 examples (allow with allow_rare / --allow-rare).",
    "E255": "A task's label list does not match the labels in its data.",
    "E260": "An unlabelled corpus file does not exist.",
    "E261": "An unlabelled corpus file is empty.",
    "E262": "An unlabelled corpus file is not UTF-8 text.",
    "E263": "A JSONL corpus has no rows with the text field.",
    "E264": "An unlabelled corpus file cannot be read (e.g. a truncated gzip file).",
    "E265": "A token store directory is not in the format this version reads.",
    "E270": "Synonym dictionary is empty or has no usable synonym groups.",
    "E271": "Synonym dictionary or vectors file is not valid UTF-8.",
    "E272": "Vectors file is empty.",
    "E280": "The pretraining text has fewer distinct words than the configured vocabulary size.",
    "E281": "The pretraining text holds too little held-apart text to measure the language models on.",
    # --- E3xx models and vectors
    "E301": "No trained model in the directory.",
    "E302": "Model directory has a newer or unknown format version.",
    "E303": "Model directory holds another kind of model.",
    "E304": "Model directory is incomplete or damaged.",
    "E305": "Vector source not built or not imported.",
    "E306": "Requested device is not available.",
    "E307": "Pretrained vectors do not fit the model settings.",
    "E308": "Compact vector store is incomplete or its files disagree.",
    "E315": "Model directory asks for tokenizer settings this version does not support.",
    "E316": "The generator cannot write in the requested theme.",
    "E317": "A pretrained language model does not fit the classifier (sizes, vocabulary or token field).",
    "E318": "A pretrained generator language model does not fit the generator (vocabulary or shape).",
    "E319": "The ONNX export of a model is missing or was made from other weights (the ONNX backend needs a current one).",
    "E320": "A classifier's calibration.json or ensemble.json is damaged (not JSON, no valid temperature or members).",
    "E321": "The members of a seed ensemble do not fit together (labels, vocabulary, tokenizer settings or a missing member).",
    "E330": "The server is still loading its models.",
    "E331": "The server has no such model loaded (classifier task, generator or vector source).",
    "E332": "The server is overloaded: too many texts wait for the classifier.",
    # --- E4xx workflow
    "E401": "Unknown stage.",
    "E402": "Another run holds the project lock.",
    "E403": "Lock file is unreadable.",
    "E404": "A stage input is missing.",
    "E405": "Stage table out of order (a stage reads an output of a later stage).",
    "E406": "Lock file has a newer lock format than this version reads.",
    "E407": "A stage finished without writing a declared output, or wrote an undeclared one.",
    "E408": "A stage run in a parallel process died, or failed with an error that could not be passed back.",
    "E409": "A worker process of the local classify engine (--workers) died before it finished its rows.",
    "E410": "No run history yet in the project (.jpipe/history.db has no runs).",
    "E411": "Unknown run id or position in the run history.",
    "E412": "The run history (.jpipe/history.db) is damaged or not a jpipe history.",
    "E413": "The run history has a newer schema version than this jpipe reads.",
    "E430": "A tuning study has no finished trial (nothing to apply or report yet).",
    "E431": "The tuning study database (.jpipe/tune.db) is corrupt or unreadable.",
}


class PipelineError(Exception):
    """Base of every error the CLI prints without a traceback.

    ``code`` is a key of ``CODES``; ``hint`` says what the user can do about it.
    """

    kind = "error"
    prefix = "E"

    def __init__(self, code: str, message: str, *, hint: str | None = None) -> None:
        if code not in CODES or not code.startswith(self.prefix):
            raise ValueError(f"{type(self).__name__} got code {code!r}; add it to pipeline.errors.CODES under {self.prefix}xx")
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __reduce__(self):
        # Pickled with its code and hint (``jpipe run --jobs N`` sends a stage's error from its process).
        return (type(self), (self.code, self.message), {"hint": self.hint})

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        return text if not self.hint else f"{text}\n{self.hint}"

    def to_json(self) -> dict[str, str | None]:
        """The error as an API payload: ``{"code", "kind", "message", "hint"}``."""
        return {"code": self.code, "kind": self.kind, "message": self.message, "hint": self.hint}


class ConfigError(PipelineError, ValueError):
    """A config value, section, key or library option is wrong (E1xx)."""

    kind = "config"
    prefix = "E1"


class InputError(PipelineError, ValueError):
    """Data supplied by the user or the corpus is missing or malformed (E2xx)."""

    kind = "input"
    prefix = "E2"


class ModelError(PipelineError):
    """A trained model or vector table is missing, of another kind, or of a newer format (E3xx)."""

    kind = "model"
    prefix = "E3"


class WorkflowError(PipelineError):
    """The stage runner cannot go on: unknown stage, lock held, stage input missing (E4xx)."""

    kind = "workflow"
    prefix = "E4"


def code_table() -> str:
    """``CODES`` as a Markdown table (for the README)."""
    kinds = {"E1": "config", "E2": "input", "E3": "model", "E4": "workflow"}
    lines = ["| code | kind | meaning |", "|---|---|---|"]
    lines += [f"| {code} | {kinds[code[:2]]} | {summary} |" for code, summary in CODES.items()]
    return "\n".join(lines)
