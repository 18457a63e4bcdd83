"""Checkpoint inference: text from a language-model checkpoint, translations from a seq2seq one.

Runner layer: a checkpoint holds its resolved run config, which `bench.config.resolve` rebuilds
before the task's module is made and its weights loaded (read with `weights_only=True`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from bench.config import resolve
from tasks import lm, text, translation


def load_checkpoint(checkpoint_path):
    """(module, level) rebuilt from a Lightning checkpoint read with weights_only=True."""
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    try:
        cfg = resolve(ckpt["hyper_parameters"]["config"])
        vocab = ckpt["vocab"]["itos"]
    except KeyError as e:
        raise ValueError(f"{checkpoint_path}: not a language-model checkpoint (no {e.args[0]!r})") from None
    if cfg.task.name != "lm":
        raise ValueError(f"{checkpoint_path}: a {cfg.task.name!r} checkpoint; sampling needs an 'lm' one")
    module = lm.LMModule(cfg, vocab)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    return module, cfg.task.level


@torch.no_grad()
def sample(checkpoint_path, prompt: str = "", length: int = 200, temperature: float = 1.0, seed: int = 0) -> str:
    """The prompt followed by `length` sampled tokens (temperature 0 = greedy)."""
    module, level = load_checkpoint(checkpoint_path)
    stoi = {t: i for i, t in enumerate(module.vocab_tokens)}
    unk = stoi.get(text.UNK, 0)
    toks = lm.tokenize(prompt, level) if prompt else []
    if level == "word" and prompt and not prompt.endswith("\n") and toks and toks[-1] == text.EOS:
        toks = toks[:-1]                 # an unfinished prompt line continues
    start = toks or (["\n"] if level == "char" else [text.EOS])
    ids = torch.tensor([[stoi.get(t, unk) for t in start]])
    g = torch.Generator().manual_seed(seed)
    logits, state = module(ids)
    out: list[str] = []
    for _ in range(length):
        last = logits[0, -1]
        if temperature <= 0:
            nxt = int(last.argmax())
        else:
            nxt = int(torch.multinomial(F.softmax(last / temperature, -1), 1, generator=g))
        out.append(module.vocab_tokens[nxt])
        logits, state = module(torch.tensor([[nxt]]), state)
    if level == "char":
        return prompt + "".join(out)
    words = lm.detokenize(out, "word")
    return (prompt + ("" if not prompt or prompt.endswith(("\n", " ")) else " ") + words) if prompt else words


def translate(checkpoint_path, sentences: Sequence[str], beam: Optional[int] = None) -> list[str]:
    """Translate raw sentences with a checkpoint read with weights_only=True."""
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    cfg = resolve(ckpt["hyper_parameters"]["config"])
    v = ckpt["vocabs"]
    module = translation.TranslationModule(cfg, v["src"], v["tgt"])
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    c = cfg.task
    ids = []
    for s in sentences:
        x = module.src_vocab.encode(text.tokenize(s, c.tokenizer, c.lowercase)) or [module.src_vocab[text.EOS]]
        ids.append(x[::-1] if c.reverse_source else x)
    src, src_len = text.pad(ids, module.src_vocab.pad_id)
    with torch.no_grad():
        return [module.to_text(h) for h in module.decode(src, src_len, beam or c.beam_size)]
