"""Decoding for encoder-decoder models: greedy, batched beam search with length normalisation,
and the teacher-forced log-probability of given hypotheses (an independent check of both).

A model here is anything with `encode(src, src_len) -> (enc, state)`, `step(y_prev, state, enc)
-> (logits, state)` and `model(src, src_len, tgt_in) -> logits` (tasks.translation.Seq2Seq).
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from tasks import text


class EncoderDecoder(Protocol):
    def encode(self, src, src_len): ...

    def step(self, y_prev, state, enc): ...

    def __call__(self, src, src_len, tgt_in): ...


def _expand_state(state, k):
    return tuple(s.repeat_interleave(k, dim=1) for s in state)


def _select_state(state, idx):
    return tuple(s.index_select(1, idx) for s in state)


def _norm(score: float, length: int, alpha: float) -> float:
    return score / (max(length, 1) ** alpha) if alpha else score


@torch.no_grad()
def greedy_decode(model: EncoderDecoder, src, src_len, bos: int, eos: int, max_len: int):
    """-> list of token-id lists (without <bos>; ending at <eos> when produced) and their raw
    log-probabilities."""
    enc, state = model.encode(src, src_len)
    B = src.size(0)
    y = torch.full((B,), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    toks, lps, alive = [], [], []
    for _ in range(max_len):
        lg, state = model.step(y, state, enc)
        logp = F.log_softmax(lg.float(), -1)
        y = logp.argmax(-1)
        alive.append(~done)
        toks.append(y)
        lps.append(logp.gather(1, y[:, None]).squeeze(1).double())
        done = done | (y == eos)
        if bool(done.all()):
            break
    alive_t = torch.stack(alive, 1).cpu()
    toks_t = torch.stack(toks, 1).cpu()
    scores = (torch.stack(lps, 1).cpu() * alive_t).sum(1)
    seqs = [toks_t[b][alive_t[b]].tolist() for b in range(B)]
    return seqs, scores.tolist()


@torch.no_grad()
def beam_decode(model: EncoderDecoder, src, src_len, bos: int, eos: int, max_len: int, beam: int,
                alpha: float = 1.0):
    """Batched beam search. Each sentence keeps `beam` live prefixes; a candidate ending in
    <eos> is set aside as finished; a sentence stops when it has `beam` finished hypotheses (or at
    max_len, where the live prefixes count as finished). Returns the best by score / len^alpha,
    compared with the greedy hypothesis under the same score (the better one is returned)."""
    if beam == 1:
        return greedy_decode(model, src, src_len, bos, eos, max_len)
    enc, state = model.encode(src, src_len)
    B, K, dev = src.size(0), beam, src.device
    enc = {k: (v.repeat_interleave(K, 0) if v is not None else None) for k, v in enc.items()}
    state = _expand_state(state, K)
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0
    prefixes = [[[] for _ in range(K)] for _ in range(B)]
    finished = [[] for _ in range(B)]          # (normalised, raw, tokens)
    active = [True] * B
    y = torch.full((B * K,), bos, dtype=torch.long, device=dev)
    for t in range(max_len):
        lg, state = model.step(y, state, enc)
        logp = F.log_softmax(lg.float(), -1).double().cpu().view(B, K, -1)
        V = logp.size(-1)
        cand = (scores.unsqueeze(-1) + logp).view(B, K * V)
        top_s, top_i = cand.topk(min(2 * K, K * V), dim=1)
        new_scores = torch.full((B, K), float("-inf"), dtype=torch.float64)
        src_rows = torch.zeros(B, K, dtype=torch.long)
        new_tok = torch.full((B, K), eos, dtype=torch.long)
        new_prefixes = [[[] for _ in range(K)] for _ in range(B)]
        for b in range(B):
            if not active[b]:
                continue
            n = 0
            for s, i in zip(top_s[b].tolist(), top_i[b].tolist()):
                if s == float("-inf"):
                    break
                k, tok = divmod(i, V)
                seq = prefixes[b][k] + [tok]
                if tok == eos:
                    finished[b].append((_norm(s, len(seq), alpha), s, seq))
                    continue
                if n < K:
                    new_scores[b, n], src_rows[b, n], new_tok[b, n] = s, k, tok
                    new_prefixes[b][n] = seq
                    n += 1
            if len(finished[b]) >= K:
                active[b] = False
        scores, prefixes = new_scores, new_prefixes
        for b in range(B):
            if not active[b]:
                scores[b] = float("-inf")
        if not any(active):
            break
        rows = (torch.arange(B).unsqueeze(1) * K + src_rows).view(-1).to(dev)
        state = _select_state(state, rows)
        y = new_tok.view(-1).to(dev)
    for b in range(B):
        if active[b]:
            for k in range(K):
                s = float(scores[b, k])
                if s > float("-inf"):
                    finished[b].append((_norm(s, len(prefixes[b][k]), alpha), s, prefixes[b][k]))
    g_seqs, g_scores = greedy_decode(model, src, src_len, bos, eos, max_len)
    seqs, raw = [], []
    for b in range(B):
        best = max(finished[b], key=lambda f: f[0]) if finished[b] else (float("-inf"), 0.0, [])
        g = (_norm(g_scores[b], len(g_seqs[b]), alpha), g_scores[b], g_seqs[b])
        if g[0] > best[0]:
            best = g
        seqs.append(best[2])
        raw.append(best[1])
    return seqs, raw


@torch.no_grad()
def sequence_logprob(model: EncoderDecoder, src, src_len, hyps: list[list[int]], bos: int, pad: int) -> list[float]:
    """Raw log-probability of each hypothesis (token ids, ending with <eos> if it has one) under
    the model, by teacher forcing -- an independent check of the decoders' bookkeeping."""
    tgt_in, _ = text.pad([[bos] + h[:-1] if h else [bos] for h in hyps], pad)
    tgt_out, lens = text.pad([h if h else [pad] for h in hyps], pad)
    logits = model(src, src_len, tgt_in.to(src.device))
    logp = F.log_softmax(logits.float(), -1).double()
    lp = logp.gather(2, tgt_out.to(src.device).unsqueeze(-1)).squeeze(-1)
    mask = text.lengths_to_mask(lens, tgt_out.size(1)).to(src.device)
    return [(lp[b][mask[b]].sum().item() if hyps[b] else 0.0) for b in range(len(hyps))]
