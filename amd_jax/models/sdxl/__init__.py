"""SDXL model stack in Flax: weight loading/export, UNet denoiser adapter, text conditioning, VAE.

Modules: `weights` (diffusers-format folders <-> Flax params, no torch), `unet` (Denoiser adapter),
`text` (CLIP-L + OpenCLIP bigG prompt encoding, micro-conditioning), `vae` (latent encode/decode).
"""
