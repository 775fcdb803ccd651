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
        self.pad_index, self.unk_index, self.bos_index, self.eos_index = pad_index, unk_index, bos_index, eos_index
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
    def attend(self, previous: torch.Tensor, state, context: torch.Tensor, encoded: Encoded):
        """The recurrent half of a decoder step. previous (B,) extended ids, context (B, 2H) ->
        (input embedding (B, E), new state ((B, H), (B, H)), new context (B, 2H), attention (B, S))."""
        inputs = previous.masked_fill(previous >= self.target_vocab_size, self.unk_index)  # copied words enter as <unk>
        embedded = self.dropout(self.target_embedding(inputs))  # (B, E)
        h, c = self.decoder(torch.cat([embedded, context], dim=-1), state)  # (B, H)
        scores = self.attention_v(torch.tanh(encoded.keys + self.attention_state(h)[:, None, :])).squeeze(-1)  # (B, S)
        attention = torch.softmax(scores.masked_fill(~encoded.mask, float("-inf")), dim=-1)  # (B, S), 0 on padding
        context = torch.bmm(attention[:, None, :], encoded.memory).squeeze(1)  # (B, 2H)
        return embedded, (h, c), context, attention

    def distribution(self, hidden, embedded, attention, encoded: Encoded, *, features=None) -> torch.Tensor:
        """P over the extended vocabulary (B, V') from hidden = [s_t; context_t] (B, 3H); features =
        dropout(hidden) when the caller already drew it."""
        features = self.dropout(hidden) if features is None else features
        vocab = torch.softmax(self.output(features), dim=-1)  # (B, V)
        if not self.copy:
            return vocab
        p_gen = self._generate_probability(hidden, embedded)  # (B, 1)
        extra = encoded.num_extended - self.target_vocab_size
        mixed = torch.cat([p_gen * vocab, vocab.new_zeros(vocab.shape[0], extra)], dim=-1)  # (B, V')
        return mixed.scatter_add(1, encoded.extended_ids, (1 - p_gen) * attention)  # pointer mass onto the source words

    def _generate_probability(self, hidden: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """p_gen = sigmoid(w [context; s; embed(y_{t-1})]) from hidden = [s; context] (..., 3H) -> (..., 1)."""
        size = self.decoder.hidden_size
        h, context = hidden[..., :size], hidden[..., size:]
        return torch.sigmoid(self.generate_gate(torch.cat([context, h, embedded], dim=-1)))

    def step(self, previous: torch.Tensor, state, context: torch.Tensor, encoded: Encoded):
        """One decoding step. previous (B,) extended ids, context (B, 2H) ->
        (log P over the extended vocabulary (B, V'), new state, new context (B, 2H), attention (B, S))."""
        embedded, state, context, attention = self.attend(previous, state, context, encoded)
        hidden = torch.cat([state[0], context], dim=-1)  # (B, 3H)
        return torch.log(self.distribution(hidden, embedded, attention, encoded) + _EPS), state, context, attention

    def forward(self, source_ids, lengths, extended_ids, num_extended: int, target_ids, *, sampling_probability: float = 0.0):
        """Teacher forcing over target_ids (B, T) (``</s>``-terminated, padded with 0) -> log P of each
        target token (B, T), 0 on padding, and attention (B, T, S). The input at step 0 is ``<s>``.

        The same figures as :meth:`step` one step at a time, at about half the cost: a row leaves the
        batch when its target ends (rows sorted by target length, step t runs the first n_t rows, as a
        packed sequence does; half of KNBC's targets are a lone ``</s>``), and the output layer, its
        softmax and the copy mix run once over all (row, step) pairs, on the target token alone."""
        encoded, state = self.encode(source_ids, lengths, extended_ids, num_extended)
        target_lengths = (target_ids != self.pad_index).sum(dim=1)  # (B,)
        order = torch.argsort(target_lengths, descending=True, stable=True)
        encoded, state, targets = _rows(encoded, order), (state[0][order], state[1][order]), target_ids[order]
        active = _active_rows(target_lengths[order].cpu().numpy(), steps=target_ids.shape[1])  # n_t per step
        context = encoded.memory.new_zeros(len(order), encoded.memory.shape[-1])
        previous = torch.full((len(order),), self.bos_index, dtype=torch.long, device=source_ids.device)
        steps = []
        for t, n in enumerate(active):
            live = _rows(encoded, slice(0, n))
            state, context, previous = (state[0][:n], state[1][:n]), context[:n], previous[:n]
            embedded, state, context, attention = self.attend(previous, state, context, live)
            hidden = torch.cat([state[0], context], dim=-1)  # (n, 3H)
            features = self.dropout(hidden)  # drawn here: scheduled sampling and the loss see the same mask
            steps.append((hidden, features, embedded, attention))
            previous = targets[:n, t]
            if sampling_probability > 0:
                # scheduled sampling: some rows see their own prediction instead of the gold token
                with torch.no_grad():
                    own = self.distribution(hidden, embedded, attention, live, features=features).argmax(dim=-1)
                previous = torch.where(torch.rand(n, device=own.device) < sampling_probability, own, previous)
        rows = torch.cat([torch.arange(n, device=targets.device) for n in active])  # (N,) packed (row, step) pairs
        times = torch.cat([torch.full((n,), t, device=targets.device) for t, n in enumerate(active)])
        hidden, features, embedded, attention = (torch.cat(parts) for parts in zip(*steps, strict=True))  # (N, .)
        packed = self._target_log_probs(hidden, features, embedded, attention, encoded.extended_ids[rows], targets[rows, times])
        index = (order[rows], times)
        log_probs = target_ids.new_zeros(target_ids.shape, dtype=packed.dtype).index_put(index, packed)
        return log_probs, attention.new_zeros((*target_ids.shape, attention.shape[-1])).index_put(index, attention)

    def _target_log_probs(self, hidden, features, embedded, attention, extended_ids, target_ids) -> torch.Tensor:
        """log P(target_ids) (N,) from each (row, step)'s [s_t; context_t] (N, 3H), its dropout, the input
        embedding (N, E), attention (N, S) and the row's extended source ids (N, S)."""
        vocab = torch.softmax(self.output(features), dim=-1)  # (N, V)
        in_vocab = target_ids < self.target_vocab_size
        picked = vocab.gather(-1, target_ids.clamp(max=self.target_vocab_size - 1)[:, None]).squeeze(-1) * in_vocab  # (N,)
        if not self.copy:
            return torch.log(picked + _EPS)
        p_gen = self._generate_probability(hidden, embedded).squeeze(-1)  # (N,)
        copied = (attention * (extended_ids == target_ids[:, None])).sum(-1)  # (N,) attention mass on the target word
        return torch.log(p_gen * picked + (1 - p_gen) * copied + _EPS)

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
        """Arg-max decoding of a batch; each hypothesis stops at ``</s>`` (not included) or ``max_length`` tokens.

        A row leaves the batch when it ends: one row that never writes ``</s>`` runs to ``max_length``
        alone instead of keeping the whole batch decoding (most KNBC outputs end within ~10 steps)."""
        encoded, state = self.encode(source_ids, lengths, extended_ids, num_extended)
        batch = source_ids.shape[0]
        context = encoded.memory.new_zeros(batch, encoded.memory.shape[-1])
        previous = torch.full((batch,), self.bos_index, dtype=torch.long, device=source_ids.device)
        results = [Hypothesis(ids=[], score=0.0, attention=[]) for _ in range(batch)]
        alive = list(range(batch))  # the batch rows still decoding, in the order of the live tensors
        for t in range(max_length):
            log_probs, state, context, attention = self.step(previous, state, context, encoded)
            if t == 0:
                log_probs = self.decide_opinion(log_probs)
            best, previous = log_probs.max(dim=-1)
            keep = []
            for position, (row, token, score) in enumerate(zip(alive, previous.tolist(), best.tolist(), strict=True)):
                results[row].score += score
                if token != self.eos_index:
                    results[row].ids.append(token)
                    results[row].attention.append(attention[position].cpu().numpy())
                    keep.append(position)
            if not keep:
                break
            if len(keep) < len(alive):
                index = torch.tensor(keep, device=previous.device)
                alive = [alive[position] for position in keep]
                state, context, previous, encoded = (
                    (state[0][index], state[1][index]),
                    context[index],
                    previous[index],
                    _rows(encoded, index),
                )
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


def _rows(encoded: Encoded, index) -> Encoded:
    """The rows ``index`` (a permutation or a slice) of an encoded batch."""
    return Encoded(
        memory=encoded.memory[index],
        keys=encoded.keys[index],
        mask=encoded.mask[index],
        extended_ids=encoded.extended_ids[index],
        num_extended=encoded.num_extended,
    )


def _active_rows(sorted_lengths: np.ndarray, *, steps: int) -> list[int]:
    """Rows still decoding at each step, for target lengths sorted in decreasing order: n_t = #{length > t}."""
    return [int(n) for n in (sorted_lengths[None, :] > np.arange(steps)[:, None]).sum(axis=1)]


def _repeat_encoded(encoded: Encoded, size: int) -> Encoded:
    return Encoded(
        memory=encoded.memory[:1].expand(size, -1, -1),
        keys=encoded.keys[:1].expand(size, -1, -1),
        mask=encoded.mask[:1].expand(size, -1),
        extended_ids=encoded.extended_ids[:1].expand(size, -1),
        num_extended=encoded.num_extended,
    )


def stepwise_target_log_probs(model: Seq2SeqExtractor, source_ids, lengths, extended_ids, num_extended: int, target_ids) -> torch.Tensor:
    """The reference for :meth:`Seq2SeqExtractor.forward` (teacher forcing, no scheduled sampling): every row
    runs every step and each step's full distribution over the extended vocabulary is computed, as decoding
    does -> log P of each target token (B, T). For tests and ``jpipe bench train --model extractor``."""
    encoded, state = model.encode(source_ids, lengths, extended_ids, num_extended)
    batch = target_ids.shape[0]
    context = encoded.memory.new_zeros(batch, encoded.memory.shape[-1])
    previous = torch.full((batch,), model.bos_index, dtype=torch.long, device=target_ids.device)
    picked = []
    for t in range(target_ids.shape[1]):
        log_probs, state, context, _ = model.step(previous, state, context, encoded)  # (B, V')
        picked.append(log_probs.gather(-1, target_ids[:, t, None]).squeeze(-1))
        previous = target_ids[:, t]
    return torch.stack(picked, dim=1) * (target_ids != model.pad_index)


def sequence_nll(target_log_probs: torch.Tensor, target_ids: torch.Tensor, *, pad_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood of target_ids (B, T) from their log-probabilities (B, T) (the
    model's output), and the token count (padding excluded)."""
    mask = target_ids != pad_index
    return -(target_log_probs * mask).sum(), mask.sum()


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
