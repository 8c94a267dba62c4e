"""Prepare SDXL training inputs once, before training: prompt embeddings and the GAN's real latents.

    python -m amd_jax.tools.prepare_sdxl --config=configs/sdxl.py --config.model.path=... --config.data.path=CAPTIONS \\
        --embeddings=gs://B/data/embeds.npz                      # then --config.data.embeddings=that file
    python -m amd_jax.tools.prepare_sdxl --config=configs/sdxl.py ... --images=IMAGE_LIST.txt --latents=gs://B/real.npz
                                                                 # then --config.data.real=that file

IMAGE_LIST.txt holds one image path (local or gs://) per line, line i for caption i of data.path (DMD2 pairs
LAION-aesthetics images with their captions). Images are resized (short side) and centre-cropped to
model.resolution, then encoded to the VAE's posterior mean times its scaling factor.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("USE_TF", "0")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from amd_jax import cli, paths  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "An SDXL config (configs/sdxl.py).", lock_config=True)
_EMBEDDINGS = flags.DEFINE_string("embeddings", "", "Write the prompt embeddings of every caption of data.path here.")
_IMAGES = flags.DEFINE_string("images", "", "A text file of image paths, one per caption of data.path.")
_LATENTS = flags.DEFINE_string("latents", "", "Write the images' VAE latents here (with --images).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    from etils import epath

    from amd_jax.tasks.sdxl import prepare as X
    from amd_jax.data import prompts as P
    from amd_jax.writers import setup_logging

    setup_logging()
    c = _CONFIG.value
    paths.resolve_config_paths(c)
    embeddings, images, latents = (paths.absolute(f.value) for f in (_EMBEDDINGS, _IMAGES, _LATENTS))
    if not (embeddings or latents) or bool(images) != bool(latents):
        sys.exit("Give --embeddings=OUT, and/or --images=LIST with --latents=OUT.")
    if embeddings:
        X.precompute_embeddings(c, embeddings)
    if latents:
        image_paths = [paths.absolute(line.strip()) for line in epath.Path(images).read_text().splitlines()
                       if line.strip()]
        n_caps = len(P.read_captions(c.data.path, c.data.field))
        if len(image_paths) != n_caps:
            sys.exit(f"{images} lists {len(image_paths)} images but data.path has {n_caps} captions: "
                     "give one image per caption, in caption order.")
        missing = [p for p in image_paths if not epath.Path(p).exists()]
        if missing:
            sys.exit(f"{len(missing)} image file(s) not found, e.g. {missing[0]}: nothing was written.")
        X.encode_real_latents(c, image_paths, latents)


if __name__ == "__main__":
    cli.run(main)
