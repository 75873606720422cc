"""Activation patching: TransformerLens's ``patching`` functions as batched masked forwards."""

from .activation import (
    activation_patch,
    get_act_patch_attn_head_all_pos_every,
    get_act_patch_attn_head_by_pos_every,
    get_act_patch_attn_head_k_all_pos,
    get_act_patch_attn_head_k_by_pos,
    get_act_patch_attn_head_out_all_pos,
    get_act_patch_attn_head_out_by_pos,
    get_act_patch_attn_head_pattern_all_pos,
    get_act_patch_attn_head_pattern_by_pos,
    get_act_patch_attn_head_pattern_dest_src_pos,
    get_act_patch_attn_head_q_all_pos,
    get_act_patch_attn_head_q_by_pos,
    get_act_patch_attn_head_v_all_pos,
    get_act_patch_attn_head_v_by_pos,
    get_act_patch_attn_out,
    get_act_patch_block_every,
    get_act_patch_mlp_out,
    get_act_patch_resid_mid,
    get_act_patch_resid_post,
    get_act_patch_resid_pre,
)
from ..engine.metrics import KLToClean, LogitDiff, LogProb, Metric
from .result import PatchingResult

__all__ = [name for name in dir() if name.startswith("get_act_patch")] + [
    "activation_patch", "PatchingResult", "Metric", "LogitDiff", "LogProb", "KLToClean"]
