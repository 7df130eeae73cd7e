"""An independent, deliberately literal implementation of docs/released-model.md (the released model's computation, quirks included) sections 3-8.

It reads weights by their released key names and spells out every step with
loops and explicit index arithmetic instead of reusing recot's modules, so
that the tests can compare recot's outputs with the behaviour the released
checkpoint expects. Slow; for tiny configs only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SAE = "model.sae."


def group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GroupNorm over dims 1.. of one sample batch, written out (eps 1e-6)."""
    b, c = x.shape[:2]
    out = torch.empty_like(x)
    per = c // groups
    for i in range(b):
        for g in range(groups):
            chunk = x[i, g * per : (g + 1) * per]
            mean = chunk.mean()
            var = ((chunk - mean) ** 2).mean()
            out[i, g * per : (g + 1) * per] = (chunk - mean) / torch.sqrt(var + 1e-6)
    shape = [1, c] + [1] * (x.dim() - 2)
    return out * weight.view(shape) + bias.view(shape)


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A kernel-1 convolution over channel dim 1 as a channel matmul."""
    w = weight.reshape(weight.shape[0], weight.shape[1])
    moved = x.movedim(1, -1) @ w.t() + bias
    return moved.movedim(-1, 1)


def spatial_block(x: torch.Tensor, sd: dict, p: str, groups: int) -> torch.Tensor:
    b, c, t, h, w = x.shape
    hn = group_norm(x, groups, sd[p + "norm.weight"], sd[p + "norm.bias"])
    q, k, v = (conv1x1(hn, sd[p + f"{n}.weight"], sd[p + f"{n}.bias"]) for n in "qkv")
    attn = torch.empty_like(x)
    for i in range(b):
        for j in range(t):
            qi = q[i, :, j].reshape(c, h * w).t()
            ki = k[i, :, j].reshape(c, h * w).t()
            vi = v[i, :, j].reshape(c, h * w).t()
            probs = torch.softmax(qi @ ki.t() * c**-0.5, dim=-1)
            attn[i, :, j] = (probs @ vi).t().reshape(c, h, w)
    return x + conv1x1(attn, sd[p + "proj_out.weight"], sd[p + "proj_out.bias"])


def relative_table(table: torch.Tensor, length: int, max_rel: int) -> torch.Tensor:
    out = torch.empty(length, length, table.shape[1], dtype=table.dtype)
    for i in range(length):
        for j in range(length):
            out[i, j] = table[max(-max_rel, min(max_rel, j - i)) + max_rel]
    return out


def temporal_block(x: torch.Tensor, sd: dict, p: str, groups: int, official: bool) -> torch.Tensor:
    b, c, t, h, w = x.shape
    seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)
    hn = group_norm(seq, groups, sd[p + "norm.weight"], sd[p + "norm.bias"])
    qkv = conv1x1(hn, sd[p + "qkv.weight"], sd[p + "qkv.bias"])
    q, k, v = qkv[:, :c] * c**-0.25, qkv[:, c : 2 * c] * c**-0.25, qkv[:, 2 * c :]
    max_rel = (sd[p + "relative_position_k.embeddings_table"].shape[0] - 1) // 2
    rk = relative_table(sd[p + "relative_position_k.embeddings_table"], t, max_rel)
    rv = relative_table(sd[p + "relative_position_v.embeddings_table"], t, max_rel)
    out = torch.zeros_like(v)
    for n in range(seq.shape[0]):
        logits = torch.empty(t, t, dtype=x.dtype)
        for ti in range(t):
            for si in range(t):
                rel = (q[n, :, si] * rk[si, ti]).sum() if official else (q[n, :, ti] * rk[ti, si]).sum()
                logits[ti, si] = (q[n, :, ti] * k[n, :, si]).sum() + rel
        probs = torch.softmax(logits, dim=-1)
        for ti in range(t):
            for si in range(t):
                out[n, :, ti] += probs[ti, si] * (v[n, :, si] + rv[ti, si])
    seq = seq + conv1x1(out, sd[p + "proj_out.weight"], sd[p + "proj_out.bias"])
    return seq.reshape(b, h, w, c, t).permute(0, 3, 4, 1, 2)


def stride_conv(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    padded = F.pad(x, (1, 1, 1, 1, 1, 0), mode="replicate")
    return F.conv3d(padded, sd[p + "conv.weight"], sd[p + "conv.bias"], stride=(2, 1, 1))


def compressor(x: torch.Tensor, sd: dict, groups: int, official: bool) -> torch.Tensor:
    """(B, C, 4, H, W) -> (B, H*W, C)."""
    x = x + sd[SAE + "temporal_encoding"].t()[None, :, :, None, None]
    stages = len({k.split(".")[3] for k in sd if k.startswith(SAE + "encoder.")}) // 3
    for s in range(stages):
        x = spatial_block(x, sd, f"{SAE}encoder.{3 * s}.", groups)
        x = temporal_block(x, sd, f"{SAE}encoder.{3 * s + 1}.", groups, official)
        x = stride_conv(x, sd, f"{SAE}encoder.{3 * s + 2}.")
    b, c, _, h, w = x.shape
    out = torch.empty(b, h * w, c, dtype=x.dtype)
    for hi in range(h):
        for wi in range(w):
            out[:, hi * w + wi] = x[:, :, 0, hi, wi]
    return out


def group_official(frames: torch.Tensor) -> torch.Tensor:
    """(4G, C, H, W) -> (G, C, 4, H, W) by the index rule of docs/released-model.md for the raw reshape."""
    n, c, h, w = frames.shape
    out = torch.empty(n // 4, c, 4, h, w, dtype=frames.dtype)
    for g in range(n // 4):
        for cp in range(c):
            for tp in range(4):
                flat = 4 * cp + tp
                out[g, cp, tp] = frames[4 * g + flat // c, flat % c]
    return out


def pool2x2(tokens: torch.Tensor, side: int) -> torch.Tensor:
    g, _, d = tokens.shape
    half = side // 2
    out = torch.empty(g, half * half, d, dtype=tokens.dtype)
    for i in range(half):
        for j in range(half):
            cells = [tokens[:, (2 * i + a) * side + (2 * j + b)] for a in range(2) for b in range(2)]
            out[:, i * half + j] = torch.stack(cells).mean(0)
    return out


def rotary(seq: torch.Tensor, base: float = 1e6) -> torch.Tensor:
    length, d = seq.shape
    out = torch.empty_like(seq)
    inv_freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(base) / d))
    for p in range(length):
        angle = torch.tensor(float(p), dtype=torch.float32) * inv_freq
        for i in range(d // 2):
            cos, sin = torch.cos(angle[i]), torch.sin(angle[i])
            out[p, 2 * i] = seq[p, 2 * i] * cos - seq[p, 2 * i + 1] * sin
            out[p, 2 * i + 1] = seq[p, 2 * i + 1] * cos + seq[p, 2 * i] * sin
    return out


def selector_inputs(
    sd: dict,
    pooled: torch.Tensor,
    time_ids: list[int],
    prompt_ids: list[int],
    placeholder: int,
    image_index: int,
    keep_ratio: float,
    heads: int,
    multiple: int,
) -> dict:
    """docs/released-model.md sections 7-8: returns scores, kept indices and the LLM inputs_embeds (L, D)."""
    embed = sd["model.embed_tokens.weight"]
    d = embed.shape[1]
    seq = torch.stack([embed[i] if i != placeholder else embed.new_zeros(d) for i in time_ids])
    visual_pos = [i for i, t in enumerate(time_ids) if t == placeholder]
    flat = pooled.reshape(-1, d)
    for n, pos in enumerate(visual_pos):
        seq[pos] = flat[n]

    text = torch.stack([embed[i] for i in prompt_ids if i != image_index])
    query = F.gelu(text @ sd["model.text_mlp.0.weight"].t() + sd["model.text_mlp.0.bias"])

    w = "model.WindowTimeToTokenAttention."
    attended = []
    hd = d // heads
    i = 0
    while i < len(time_ids):
        time_pos = []
        while time_ids[i] != placeholder:
            time_pos.append(i)
            i += 1
        vis = []
        while i < len(time_ids) and time_ids[i] == placeholder:
            vis.append(i)
            i += 1
        qv = seq[vis] @ sd[w + "k_proj.weight"].t() + sd[w + "k_proj.bias"]
        kt = seq[time_pos] @ sd[w + "q_proj.weight"].t() + sd[w + "q_proj.bias"]
        head_out = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            probs = torch.softmax(qv[:, sl] @ kt[:, sl].t() * hd**-0.5, dim=-1)
            head_out.append(probs @ kt[:, sl])
        attended.append(torch.cat(head_out, dim=1) @ sd[w + "out_proj.weight"].t() + sd[w + "out_proj.bias"])
    attended = torch.cat(attended)
    raw = torch.stack([sum((attended[n] * query[j]).sum() for j in range(len(query))) / len(query) for n in range(len(attended))])
    scores = (raw - raw.min()) / (raw.max() - raw.min())

    rotated = rotary(seq)
    for n, pos in enumerate(visual_pos):
        rotated[pos] += scores[n]
    k = int(len(visual_pos) * keep_ratio) // multiple * multiple
    kept = sorted(torch.topk(scores, k).indices.tolist())
    kept_pos = set(visual_pos[n] for n in kept)
    keep = [p for p in range(len(time_ids)) if p not in visual_pos or p in kept_pos]
    kept_seq = rotated[keep]

    image_at = prompt_ids.index(image_index)
    before = torch.stack([embed[i] for i in prompt_ids[:image_at]])
    after = torch.stack([embed[i] for i in prompt_ids[image_at + 1 :]])
    return {
        "scores": scores,
        "kept": torch.tensor(kept),
        "inputs_embeds": torch.cat([before, kept_seq, after]),
    }
