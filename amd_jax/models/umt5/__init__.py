"""umT5 text encoder (Wan2.1's umT5-XXL) in Flax, without torch.

Modules: `encoder` (the network, `prompt_embeds` as WanPipeline zeroes the padding, `stack_blocks` for the
scanned tree), `weights` (transformers' text_encoder/ folder -> checked Flax params).
"""
