"""Opinion (評判) extraction with a trained ``Seq2SeqExtractor``: ``Extractor.from_dir(path).extract(texts, beam=...)``.

Each text is tokenized like the training data (GiNZA surface tokens, the model's Sudachi
split mode). A text longer than the model's ``max_tokens`` is cut into windows of that many
tokens (half overlapping); the records of every window are merged (the same type +
expression + target once) and their spans are character offsets in the original text.

Records: ``{"type", "polarity", "expression", "target", "expression_span", "target_span"}``,
a span being ``[start, end)`` in the text or None when the words are not found there
(an implicit target such as ``プリペイド携帯`` for a sentence that only says ``使いでがある``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.opinions import find_span, parse, token_offsets
from pipeline.data.readers import InputRecord, check_text
from pipeline.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

ARCHITECTURE = "Seq2SeqExtractor"
MAX_BEAM = 32


@dataclass
class Window:
    start: int  # character offset of the window in the text
    text: str
    tokens: list[str]


@dataclass
class Decoded:
    """One window's decoder output: tokens, per-step attention (T_out, S) and the records parsed from it."""

    window: Window
    output: list[str]
    attention: Any  # numpy (T_out, S)
    records: list[dict]


class Extractor:
    """A loaded extractor: ``extract`` (records per text), ``explain`` (with the alignment)."""

    def __init__(self, *, model, source_vocab, target_vocab, tokenizer, max_tokens: int, max_output_tokens: int, device) -> None:
        self.model, self.source_vocab, self.target_vocab = model, source_vocab, target_vocab
        self.tokenizer, self.max_tokens, self.max_output_tokens, self.device = tokenizer, max_tokens, max_output_tokens, device

    @classmethod
    def from_dir(cls, path: str | os.PathLike, *, device: str = "cpu") -> Extractor:
        """Load ``models/extractor`` (or any directory written by the train_extractor stage)."""
        from pipeline.models.model_dir import model_split_mode, read_model_dir, require_model_dir
        from pipeline.models.runtime import pick_device
        from pipeline.models.seq2seq import Seq2SeqExtractor
        from pipeline.models.vocab import Vocab
        from pipeline.text.tokenize import load_tokenizer

        directory = require_model_dir(path, train_hint="Train one with `jpipe run train_extractor`.")
        info = read_model_dir(directory, architecture=ARCHITECTURE)
        torch_device = pick_device(device)
        vocab = info["vocab"]
        return cls(
            model=Seq2SeqExtractor.from_dir(directory, device=torch_device),
            source_vocab=Vocab.from_json(vocab),
            target_vocab=Vocab(list(vocab["target_itos"])),
            tokenizer=load_tokenizer(model_split_mode(info["tokenizer"], directory=directory), with_pos=False),
            max_tokens=int(vocab["max_tokens"]),
            max_output_tokens=int(vocab["max_output_tokens"]),
            device=torch_device,
        )

    # ------------------------------------------------------------ windows
    def windows(self, text: str) -> list[Window]:
        """The text as windows of at most ``max_tokens`` tokens (half overlapping when it is longer)."""
        tokens = self.tokenizer.tokenize(text)["surface"]
        if not tokens:
            raise InputError("E236", "The text has no tokens to extract from.", hint="Give a non-empty Japanese sentence.")
        if len(tokens) <= self.max_tokens:
            return [Window(start=0, text=text, tokens=tokens)]
        offsets = token_offsets(text, tokens)
        stride = max(1, self.max_tokens // 2)
        windows = []
        for first in range(0, len(tokens) - self.max_tokens + stride, stride):
            piece = tokens[first : first + self.max_tokens]
            known = [o for o in offsets[first : first + len(piece)] if o is not None]
            start, end = (known[0][0], known[-1][1]) if known else (0, len(text))
            windows.append(Window(start=start, text=text[start:end], tokens=piece))
        return windows

    def _decode(self, window: Window, *, beam: int) -> Decoded:
        from pipeline.models.seq2seq import decode_ids, encode_source, pad_sources

        item = encode_source(window.tokens, source_vocab=self.source_vocab, target_vocab=self.target_vocab, max_tokens=self.max_tokens)
        tensors = pad_sources([item], target_vocab_size=len(self.target_vocab), device=self.device)
        if beam == 1:
            hypothesis = self.model.greedy(*tensors, max_length=self.max_output_tokens)[0]
        else:
            hypothesis = self.model.beam_search(*tensors, beam=beam, max_length=self.max_output_tokens)
        import numpy as np

        output = decode_ids(hypothesis.ids, item, target_vocab=self.target_vocab)
        attention = np.stack(hypothesis.attention) if hypothesis.attention else np.zeros((0, len(window.tokens)))
        return Decoded(window=window, output=output, attention=attention, records=parse(output, text=window.text))

    # ------------------------------------------------------------- public
    def extract_one(self, text: str, *, beam: int = 1) -> list[dict[str, Any]]:
        """Records of one text, windows merged, spans in ``text``."""
        _check_beam(beam)
        merged: dict[tuple, dict[str, Any]] = {}
        for window in self.windows(text):
            for record in self._decode(window, beam=beam).records:
                key = (record["type"], record["expression"], record["target"])
                if key not in merged:
                    merged[key] = _shift(record, window, text)
        return list(merged.values())

    def extract(self, texts: Iterable[str], *, beam: int = 1) -> list[list[dict[str, Any]]]:
        """Records per text (``beam`` 1 = greedy decoding)."""
        return [self.extract_one(text, beam=beam) for text in texts]

    def explain(self, text: str, *, beam: int = 1) -> dict[str, Any]:
        """The first window's input tokens, output tokens and alignment (attention of each output step over the input)."""
        _check_beam(beam)
        decoded = self._decode(self.windows(text)[0], beam=beam)
        return {
            "text": text,
            "input_tokens": decoded.window.tokens,
            "output_tokens": decoded.output,
            "attention": decoded.attention.round(4).tolist(),
            "records": [_shift(r, decoded.window, text) for r in decoded.records],
        }


def _shift(record: dict[str, Any], window: Window, text: str) -> dict[str, Any]:
    """Spans of a window's record as offsets in the whole text."""
    result = {key: record[key] for key in ("type", "polarity", "expression", "target")}
    for name in ("expression", "target"):
        span = record.get(f"{name}_span")
        result[f"{name}_span"] = [span[0] + window.start, span[1] + window.start] if span else find_span(text, record[name])
    return result


def _check_beam(beam: int) -> None:
    if not isinstance(beam, int) or isinstance(beam, bool) or not 1 <= beam <= MAX_BEAM:
        raise ConfigError("E109", f"beam must be an integer from 1 to {MAX_BEAM}, got {beam!r}.", hint="Use beam = 1 (greedy) to 5.")


def extract_records(records: Iterable[InputRecord], *, extractor: Extractor, beam: int = 1) -> Iterator[dict[str, Any]]:
    """Output rows ``{id, text, records, error}`` for input rows; a bad row gets an error and the rest go on."""
    for record in records:
        error = record.error or (check_text(record.text) if record.text is not None else "no text")
        if error is None:
            try:
                yield {"id": record.id, "text": record.text, "records": extractor.extract_one(record.text, beam=beam), "error": None}
                continue
            except InputError as exc:
                error = exc.message
        yield {"id": record.id, "text": record.text, "records": None, "error": error}


def default_extractor_dir(project_dir: str | os.PathLike) -> Path:
    from pipeline.paths import EXTRACTOR_DIR

    return Path(project_dir) / EXTRACTOR_DIR
