"""pytorch-fid's InceptionV3 (FID, sFID, Inception Score): `network` (Flax, with its input resize ops) and
`weights` (pytorch-fid state dict -> Flax variables)."""
