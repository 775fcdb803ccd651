"""Sequence-to-sequence opinion extractor: BiLSTM encoder, LSTM decoder with additive attention and copy.

::

    source tokens (B, S) -> embedding -> BiLSTM -> memory (B, S, 2H)
    decoder step t:  input  [embed(y_{t-1}); context_{t-1}]          (input feeding)
                     LSTMCell -> state s_t (B, H)
                     additive (Bahdanau) attention  e_ti = v^T tanh(W_m m_i + W_s s_t),  a_t = softmax(e_t) over real tokens
                     context_t = sum_i a_ti m_i  (B, 2H)
                     P_vocab = softmax(W_o [s_t; context_t])          (B, V)
                     copy (pointer-generator, See et al. 2017):
                     p_gen = sigmoid(w [context_t; s_t; embed(y_{t-1})])
                     P(w) = p_gen P_vocab(w) + (1 - p_gen) sum_{i: x_i = w} a_ti   over the extended vocabulary

The extended vocabulary is the target vocabulary (V ids) plus, per sentence, its source
tokens that are not in it (ids V, V+1, ...): the decoder can write a word it has never
seen in training by pointing at it. Without copy the output is P_vocab alone.

Training uses teacher forcing; with ``sampling_probability`` > 0 (scheduled sampling)
each row's next input is, with that probability, the model's own previous prediction.
Decoding: :meth:`Seq2SeqExtractor.greedy` (batched) and :meth:`Seq2SeqExtractor.beam_search`
(one sentence, K hypotheses). Both return the attention weights of every output step
(the alignment heatmap).

torch + numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.models.vocab import Vocab

ARCHITECTURE = "Seq2SeqExtractor"
TARGET_SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
_EPS = 1e-12


# ---------------------------------------------------------------- encoding
@dataclass
class SourceItem:
    """One source sentence: ids for the encoder, extended ids for copying, and its out-of-target-vocabulary words."""

    source_ids: np.ndarray  # (S,) source-vocabulary ids
    extended_ids: np.ndarray  # (S,) target-vocabulary ids, V + k for the k-th source word not in it
    oov: list[str]  # extended id V + k -> oov[k]


def encode_source(tokens: Sequence[str], *, source_vocab: Vocab, target_vocab: Vocab, max_tokens: int) -> SourceItem:
    tokens = list(tokens[:max_tokens]) or ["<unk>"]
    oov: list[str] = []
    extended = []
    for token in tokens:
        index = target_vocab.stoi.get(token)
        if index is None:
            if token not in oov:
                oov.append(token)
            index = len(target_vocab) + oov.index(token)
        extended.append(index)
    return SourceItem(
        source_ids=np.asarray(source_vocab.encode(tokens), dtype=np.int64), extended_ids=np.asarray(extended, dtype=np.int64), oov=oov
    )


def encode_target(tokens: Sequence[str], item: SourceItem, *, target_vocab: Vocab, copy: bool) -> np.ndarray:
    """Target tokens + ``</s>`` -> (T,) ids; a word outside the target vocabulary is its extended id when copied, else <unk>."""
    ids = []
    for token in [*tokens, "</s>"]:
        index = target_vocab.stoi.get(token)
        if index is None:
            index = len(target_vocab) + item.oov.index(token) if copy and token in item.oov else target_vocab.unk_index
        ids.append(index)
    return np.asarray(ids, dtype=np.int64)


def decode_ids(ids: Sequence[int], item: SourceItem, *, target_vocab: Vocab) -> list[str]:
    """Extended ids (without ``</s>``) -> tokens."""
    size = len(target_vocab)
    return [target_vocab.itos[i] if i < size else item.oov[i - size] for i in ids]


@dataclass
class Encoded:
    """Encoder output for a batch (or for the K beams of one sentence)."""

    memory: torch.Tensor  # (B, S, 2H)
    keys: torch.Tensor  # (B, S, A)  W_m m_i, computed once per sentence
    mask: torch.Tensor  # (B, S) bool, True on real tokens
    extended_ids: torch.Tensor  # (B, S)
    num_extended: int  # width of the extended vocabulary: V + max OOVs in the batch


@dataclass
class Hypothesis:
    ids: list[int]
    score: float  # sum of log-probabilities
    attention: list[np.ndarray]  # one (S,) row per output step


# ------------------------------------------------------------------- model
class Seq2SeqExtractor(nn.Module):
    def __init__(
        self,
        *,
        source_vocab_size: int,
        target_vocab_size: int,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        attention_size: int = 128,
        dropout: float = 0.2,
        copy: bool = True,
        pad_index: int = 0,
        unk_index: int = 1,
        bos_index: int = 2,
        eos_index: int = 3,
    ) -> None:
        super().__init__()
        self.target_vocab_size = target_vocab_size
        self.copy = copy
        self.unk_index, self.bos_index, self.eos_index = unk_index, bos_index, eos_index
        self.source_embedding = nn.Embedding(source_vocab_size, embedding_dim, padding_idx=pad_index)
        self.encoder = nn.LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.bridge_h = nn.Linear(2 * hidden_size, hidden_size)
        self.bridge_c = nn.Linear(2 * hidden_size, hidden_size)
        self.target_embedding = nn.Embedding(target_vocab_size, embedding_dim, padding_idx=pad_index)
        self.decoder = nn.LSTMCell(embedding_dim + 2 * hidden_size, hidden_size)
        self.attention_memory = nn.Linear(2 * hidden_size, attention_size, bias=False)
        self.attention_state = nn.Linear(hidden_size, attention_size)
        self.attention_v = nn.Linear(attention_size, 1, bias=False)
        self.output = nn.Linear(3 * hidden_size, target_vocab_size)
        self.generate_gate = nn.Linear(3 * hidden_size + embedding_dim, 1)
        self.dropout = nn.Dropout(dropout)

    # ------------------------------------------------------------ encoder
    def encode(self, source_ids: torch.Tensor, lengths: torch.Tensor, extended_ids: torch.Tensor, num_extended: int):
        """(B, S) ids, (B,) CPU lengths -> Encoded and the decoder's initial state ((B, H), (B, H))."""
        embedded = self.dropout(self.source_embedding(source_ids))  # (B, S, E)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, (h, c) = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=source_ids.shape[1])  # (B, S, 2H)
        # h, c: (2, B, H) forward and backward final states -> (B, 2H) -> the decoder's (B, H)
        state = (
            torch.tanh(self.bridge_h(torch.cat([h[0], h[1]], dim=-1))),
            torch.tanh(self.bridge_c(torch.cat([c[0], c[1]], dim=-1))),
        )
        mask = torch.arange(source_ids.shape[1], device=source_ids.device)[None, :] < lengths.to(source_ids.device)[:, None]
        encoded = Encoded(
            memory=memory, keys=self.attention_memory(memory), mask=mask, extended_ids=extended_ids, num_extended=num_extended
        )
        return encoded, state

    # ------------------------------------------------------------ decoder
    def step(self, previous: torch.Tensor, state, context: torch.Tensor, encoded: Encoded):
        """One decoder step. previous (B,) extended ids, context (B, 2H) ->
        (log P over the extended vocabulary (B, V'), new state, new context (B, 2H), attention (B, S))."""
        inputs = previous.masked_fill(previous >= self.target_vocab_size, self.unk_index)  # copied words enter as <unk>
        embedded = self.dropout(self.target_embedding(inputs))  # (B, E)
        h, c = self.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, H)
        scores = self.attention_v(torch.tanh(encoded.keys + self.attention_state(h)[:, None, :])).squeeze(-1)  # (B, S)
        attention = torch.softmax(scores.masked_fill(~encoded.mask, float("-inf")), dim=-1)  # (B, S), 0 on padding
        context = torch.bmm(attention[:, None, :], encoded.memory).squeeze(1)  # (B, 2H)
        features = self.dropout(torch.cat([h, context], dim=-1))  # (B, 3H)
        vocab = torch.softmax(self.output(features), dim=-1)  # (B, V)
        if not self.copy:
            return torch.log(vocab + _EPS), (h, c), context, attention
        p_gen = torch.sigmoid(self.generate_gate(torch.cat([context, h, embedded], dim=-1)))  # (B, 1)
        extra = encoded.num_extended - self.target_vocab_size
        mixed = torch.cat([p_gen * vocab, vocab.new_zeros(vocab.shape[0], extra)], dim=-1)  # (B, V')
        mixed = mixed.scatter_add(1, encoded.extended_ids, (1 - p_gen) * attention)  # pointer mass onto the source words
        return torch.log(mixed + _EPS), (h, c), context, attention

    def forward(self, source_ids, lengths, extended_ids, num_extended: int, target_ids, *, sampling_probability: float = 0.0):
        """Teacher forcing over target_ids (B, T) (``</s>``-terminated, padded) ->
        log-probabilities (B, T, V') and attention (B, T, S). The input at step 0 is ``<s>``."""
        encoded, state = self.encode(source_ids, lengths, extended_ids, num_extended)
        batch = source_ids.shape[0]
        context = encoded.memory.new_zeros(batch, encoded.memory.shape[-1])
        previous = torch.full((batch,), self.bos_index, dtype=torch.long, device=source_ids.device)
        outputs, attentions = [], []
        for t in range(target_ids.shape[1]):
            log_probs, state, context, attention = self.step(previous, state, context, encoded)
            outputs.append(log_probs)
            attentions.append(attention)
            previous = target_ids[:, t]
            if sampling_probability > 0:
                # scheduled sampling: some rows see their own prediction instead of the gold token
                own = log_probs.detach().argmax(dim=-1)
                use_own = torch.rand(batch, device=own.device) < sampling_probability
                previous = torch.where(use_own, own, previous)
        return torch.stack(outputs, dim=1), torch.stack(attentions, dim=1)

    # ----------------------------------------------------------- decoding
    def decide_opinion(self, log_probs: torch.Tensor) -> torch.Tensor:
        """First decoding step: ``</s>`` ("no opinion") competes with 12 record types, so an arg-max
        picks it whenever no single type beats it, even if a record is far more likely than none.
        Decide on the marginal instead: ``</s>`` is allowed only when P(</s>) >= 0.5. log_probs (B, V')."""
        blocked = log_probs[:, self.eos_index] < float(np.log(0.5))  # (B,)
        log_probs = log_probs.clone()
        log_probs[blocked, self.eos_index] = float("-inf")
        return log_probs

    @torch.no_grad()
    def greedy(self, source_ids, lengths, extended_ids, num_extended: int, *, max_length: int) -> list[Hypothesis]:
        """Arg-max decoding of a batch; each hypothesis stops at ``</s>`` (not included) or ``max_length`` tokens."""
        encoded, state = self.encode(source_ids, lengths, extended_ids, num_extended)
        batch = source_ids.shape[0]
        context = encoded.memory.new_zeros(batch, encoded.memory.shape[-1])
        previous = torch.full((batch,), self.bos_index, dtype=torch.long, device=source_ids.device)
        results = [Hypothesis(ids=[], score=0.0, attention=[]) for _ in range(batch)]
        done = [False] * batch
        for t in range(max_length):
            log_probs, state, context, attention = self.step(previous, state, context, encoded)
            if t == 0:
                log_probs = self.decide_opinion(log_probs)
            best, previous = log_probs.max(dim=-1)
            for row, (token, score) in enumerate(zip(previous.tolist(), best.tolist(), strict=True)):
                if done[row]:
                    continue
                results[row].score += score
                if token == self.eos_index:
                    done[row] = True
                    continue
                results[row].ids.append(token)
                results[row].attention.append(attention[row].cpu().numpy())
            if all(done):
                break
        return results

    @torch.no_grad()
    def beam_search(self, source_ids, lengths, extended_ids, num_extended: int, *, beam: int, max_length: int) -> Hypothesis:
        """Beam search over one sentence (B = 1): the best finished hypothesis by total log-probability.

        Each step expands the live hypotheses, keeps the best ``beam`` that do not end in ``</s>``
        and moves those that do to the finished list; it stops with ``beam`` finished ones. With
        ``beam = 1`` this is exactly greedy decoding.
        """
        encoded, state = self.encode(source_ids, lengths, extended_ids, num_extended)
        live = [Hypothesis(ids=[], score=0.0, attention=[])]
        context = encoded.memory.new_zeros(1, encoded.memory.shape[-1])
        finished: list[Hypothesis] = []
        for t in range(max_length):
            size = len(live)
            expanded = _repeat_encoded(encoded, size)  # the sentence once per live hypothesis
            previous = torch.tensor([h.ids[-1] if h.ids else self.bos_index for h in live], device=source_ids.device)
            log_probs, state, context, attention = self.step(previous, state, context, expanded)
            if t == 0:
                log_probs = self.decide_opinion(log_probs)
            totals = log_probs + torch.tensor([h.score for h in live], device=log_probs.device)[:, None]  # (K, V')
            top_scores, top_index = totals.flatten().topk(min(2 * beam, totals.numel()))
            keep, next_live = [], []
            for score, flat in zip(top_scores.tolist(), top_index.tolist(), strict=True):
                parent, token = divmod(flat, totals.shape[1])
                rows = [*live[parent].attention, attention[parent].cpu().numpy()]
                if token == self.eos_index:
                    finished.append(Hypothesis(ids=list(live[parent].ids), score=score, attention=rows[:-1]))
                elif len(next_live) < beam:
                    next_live.append(Hypothesis(ids=[*live[parent].ids, token], score=score, attention=rows))
                    keep.append(parent)
                if len(next_live) == beam:
                    break
            if len(finished) >= beam or not next_live:
                break
            index = torch.tensor(keep, device=source_ids.device)
            live, state, context = next_live, (state[0][index], state[1][index]), context[index]
        else:
            finished.extend(live)
        return max(finished or live, key=lambda h: h.score)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> Seq2SeqExtractor:
        from pipeline.models.model_dir import WEIGHTS_NAME, load_weights, read_model_dir

        info = read_model_dir(directory, architecture=ARCHITECTURE)
        model = cls(**info["model_args"])
        load_weights(model, os.path.join(directory, WEIGHTS_NAME), device=str(device))
        return model.to(device).eval()


def _repeat_encoded(encoded: Encoded, size: int) -> Encoded:
    return Encoded(
        memory=encoded.memory[:1].expand(size, -1, -1),
        keys=encoded.keys[:1].expand(size, -1, -1),
        mask=encoded.mask[:1].expand(size, -1),
        extended_ids=encoded.extended_ids[:1].expand(size, -1),
        num_extended=encoded.num_extended,
    )


def sequence_nll(log_probs: torch.Tensor, target_ids: torch.Tensor, *, pad_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of target_ids (B, T) under log_probs (B, T, V'), and the token count (padding excluded)."""
    picked = log_probs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    mask = target_ids != pad_index
    return -(picked * mask).sum(), mask.sum()


def pad_sources(items: Sequence[SourceItem], *, target_vocab_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """SourceItems -> source ids (B, S), CPU lengths (B,), extended ids (B, S), extended vocabulary width V'."""
    lengths = np.fromiter((len(item.source_ids) for item in items), dtype=np.int64, count=len(items))
    source = np.zeros((len(items), int(lengths.max())), dtype=np.int64)
    extended = np.zeros_like(source)
    for row, item in enumerate(items):
        source[row, : lengths[row]] = item.source_ids
        extended[row, : lengths[row]] = item.extended_ids
    num_extended = target_vocab_size + max(len(item.oov) for item in items)
    return (torch.from_numpy(source).to(device), torch.from_numpy(lengths), torch.from_numpy(extended).to(device), num_extended)


def pad_targets(targets: Sequence[np.ndarray], *, device, pad_index: int = 0) -> torch.Tensor:
    """(T_i,) target id arrays -> (B, T) padded with ``pad_index``."""
    width = max(len(t) for t in targets)
    ids = np.full((len(targets), width), pad_index, dtype=np.int64)
    for row, target in enumerate(targets):
        ids[row, : len(target)] = target
    return torch.from_numpy(ids).to(device)
