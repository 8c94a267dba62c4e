"""The Wan2.1 text-to-video family in Flax: `transformer` (diffusers' WanTransformer3DModel, channels-last) and
`weights` (its diffusers `transformer/` folders <-> Flax params, torch-free)."""
