"""Greedy decoding through the adapter (the same code on HookedTransformer and TransformerBridge)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from .adapter import as_adapter


@dataclass
class Generation:
    """A greedy continuation.

    Attributes:
        prompt: the prompt text ("" when token ids were given).
        prompt_tokens: ``[pos]`` prompt token ids (BOS included if one was prepended).
        new_tokens: ``[n_new]`` generated ids (an EOS that stopped decoding included).
        text: decoded ``new_tokens`` (special tokens kept out).
        stopped_at_eos: whether decoding stopped on the tokenizer's EOS.
    """

    prompt: str
    prompt_tokens: Int[Tensor, "pos"]
    new_tokens: Int[Tensor, "n_new"]
    text: str
    stopped_at_eos: bool = False
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "prompt_tokens": self.prompt_tokens.tolist(),
                "new_tokens": self.new_tokens.tolist(), "text": self.text,
                "stopped_at_eos": self.stopped_at_eos, "meta": self.meta}


@torch.no_grad()
def greedy_generate(model, prompt, max_new_tokens: int = 20, *, prepend_bos: bool | None = None,
                    stop_at_eos: bool = True) -> Generation:
    """Append the argmax token ``max_new_tokens`` times (full forward per step, no KV cache).

    ``prompt`` is text or token ids ``[pos]`` / ``[1, pos]``. ``prepend_bos`` defaults to the
    model's setting (SmolLM2: no BOS, which is how its greedy text matches Hugging Face's).
    """
    adapter = as_adapter(model)
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0")
    tokens = adapter.as_tokens(prompt, prepend_bos=prepend_bos)
    if tokens.shape[0] != 1:
        raise ValueError("greedy_generate takes one prompt")
    tok = adapter.tokenizer
    eos = getattr(tok, "eos_token_id", None) if tok is not None else None
    new: list[int] = []
    stopped = False
    for _ in range(max_new_tokens):
        if tokens.shape[1] >= adapter.n_ctx:
            break
        logits = adapter.forward(tokens)
        nxt = int(logits[0, -1].argmax())
        new.append(nxt)
        tokens = torch.cat([tokens, torch.tensor([[nxt]], device=tokens.device)], dim=1)
        if stop_at_eos and eos is not None and nxt == eos:
            stopped = True
            break
    new_t = torch.tensor(new, dtype=torch.long)
    if tok is not None:
        text = tok.decode(new, skip_special_tokens=True)
    else:
        text = "".join(f"<{i}>" for i in new)
    return Generation(prompt=prompt if isinstance(prompt, str) else "",
                      prompt_tokens=tokens[0, : tokens.shape[1] - len(new)].cpu(), new_tokens=new_t,
                      text=text, stopped_at_eos=stopped, meta=adapter.meta)
