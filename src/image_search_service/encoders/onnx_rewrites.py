"""Rewrites of an image tower, in a throwaway copy, that export to faster ONNX graphs.

They compute what the original modules compute (the export is verified against the
untouched PyTorch model either way) and only swap modules they can express exactly.

**Self-attention as ONNX Runtime's fused ``MultiHeadAttention`` operator.** Exported as
plain ONNX, each attention layer of a ViT becomes ~40 small nodes
(reshapes, transposes, a shape-derived scale, two MatMuls, a Softmax). ONNX Runtime's
CPU kernel for ``com.microsoft.MultiHeadAttention`` does the same work in one node, so
the export swaps, in a throwaway copy of the model, every self-attention module whose
computation it can express exactly (no mask, no q/k norm, no gate) for one that exports
as ``MatMul + Add`` (the QKV projection, which INT8 quantization then takes like any
other weight) ``-> Split -> MultiHeadAttention``. Measured with
``scripts/benchmark_export_rewrites.py`` (batch 16, 2 threads): INT8 1.14x faster on
ViT-B-16-SigLIP's image tower and 1.20x on ViT-B-32's, fp32 1.01-1.06x, agreement with
PyTorch unchanged (docs/performance.md). Any module it does not recognise keeps
its own export.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

MS_DOMAIN = "com.microsoft"


class _SelfAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d)) v over heads, with q, k, v = x @ weight + bias."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_heads: int
    ) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        qkv = torch.addmm(bias, x.reshape(-1, hidden), weight)
        qkv = qkv.reshape(batch, tokens, 3, num_heads, hidden // num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(batch, tokens, hidden)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, bias: Any, num_heads: int) -> Any:
        hidden = int(weight.type().sizes()[0])
        qkv = g.op("Add", g.op("MatMul", x, weight), bias)
        sizes = g.op("Constant", value_t=torch.tensor([hidden, hidden, hidden]))
        q, k, v = g.op("Split", qkv, sizes, axis_i=2, outputs=3)
        out = g.op(f"{MS_DOMAIN}::MultiHeadAttention", q, k, v, num_heads_i=num_heads)
        out.setType(x.type())
        return out


class _FusedTimmAttention(torch.nn.Module):
    """timm's ``Attention`` (the SigLIP image tower) with the fused export."""

    original: Any

    def __init__(self, original: Any) -> None:
        super().__init__()
        self.original = original
        qkv = original.qkv
        self.num_heads = int(original.num_heads)
        self.weight = torch.nn.Parameter(qkv.weight.detach().t().contiguous(), requires_grad=False)
        self.bias = torch.nn.Parameter(qkv.bias.detach().clone(), requires_grad=False)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            return self.original(x, attn_mask=attn_mask, is_causal=is_causal)  # type: ignore[no-any-return]
        attended = _SelfAttention.apply(x, self.weight, self.bias, self.num_heads)
        out = self.original.proj(self.original.norm(attended))
        return self.original.proj_drop(out)  # type: ignore[no-any-return]


class _FusedMultiheadAttention(torch.nn.Module):
    """``torch.nn.MultiheadAttention`` used as self-attention (open_clip's ViT blocks)."""

    def __init__(self, original: torch.nn.MultiheadAttention) -> None:
        super().__init__()
        self.original = original
        self.num_heads = int(original.num_heads)
        assert original.in_proj_bias is not None
        self.weight = torch.nn.Parameter(
            original.in_proj_weight.detach().t().contiguous(), requires_grad=False
        )
        self.bias = torch.nn.Parameter(original.in_proj_bias.detach().clone(), requires_grad=False)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (
            query is not key
            or key is not value
            or key_padding_mask is not None
            or attn_mask is not None
            or need_weights
            or is_causal
        ):
            return self.original(  # type: ignore[no-any-return]
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        x = query if self.original.batch_first else query.transpose(0, 1)
        attended = _SelfAttention.apply(x, self.weight, self.bias, self.num_heads)
        out = self.original.out_proj(attended)
        return (out if self.original.batch_first else out.transpose(0, 1)), None


def _timm_attention_type() -> type[torch.nn.Module] | None:
    try:
        from timm.layers.attention import Attention
    except ImportError:  # timm is optional: only timm-backed towers (SigLIP) use it
        return None
    return Attention


def _fusable_timm(module: torch.nn.Module) -> bool:
    qkv = getattr(module, "qkv", None)
    return (
        isinstance(qkv, torch.nn.Linear)
        and qkv.bias is not None
        and qkv.out_features == 3 * qkv.in_features
        and getattr(module, "gate", None) is None
        and isinstance(getattr(module, "q_norm", None), torch.nn.Identity)
        and isinstance(getattr(module, "k_norm", None), torch.nn.Identity)
        and getattr(module, "attn_dim", qkv.in_features) == qkv.in_features
        and qkv.in_features % int(getattr(module, "num_heads", 0) or 1) == 0
    )


def _fusable_mha(module: torch.nn.MultiheadAttention) -> bool:
    return bool(module._qkv_same_embed_dim) and module.in_proj_bias is not None


def fuse_self_attention(module: torch.nn.Module) -> int:
    """Swap, in place, each self-attention layer under ``module`` for its fused export.

    Returns how many were swapped. Only for a copy that is about to be exported: the
    fused layers compute the same thing in PyTorch, but the swap is not undone.
    """
    timm_attention = _timm_attention_type()
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            replacement: torch.nn.Module | None = None
            if isinstance(child, torch.nn.MultiheadAttention) and _fusable_mha(child):
                replacement = _FusedMultiheadAttention(child)
            elif timm_attention is not None and isinstance(child, timm_attention):
                if _fusable_timm(child):
                    replacement = _FusedTimmAttention(child)
            if replacement is not None:
                setattr(parent, name, replacement)
                swapped += 1
    return swapped
