"""amd_jax/tensor_files.py: the one .safetensors / .npz / .npy reader and writer, checked against the libraries'
own readers and writers (the bytes each format's library would write; what it reads back)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import safetensors.numpy

from amd_jax import caches, tensor_files

ARRAYS = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array(7, np.int64),
          "c": np.ones((2, 2), np.float16)}


def _same(got, want):
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)


@pytest.mark.parametrize("compress", [False, True])
def test_npz_bytes_are_numpys(tmp_path, compress):
    tensor_files.write(tmp_path / "x.npz", ARRAYS, compress=compress)
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **ARRAYS)
    assert (tmp_path / "x.npz").read_bytes() == buf.getvalue()
    _same(tensor_files.read(tmp_path / "x.npz"), ARRAYS)


def test_safetensors_bytes_metadata_and_layout(tmp_path):
    fortran = {"f": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)), "s": np.array(2.5, np.float32)}
    tensor_files.write(str(tmp_path / "x.safetensors"), fortran, metadata={"format": "pt"})
    # safetensors copies raw memory: read back by its own reader, the Fortran array must keep its values, 0-d its shape
    _same(safetensors.numpy.load_file(str(tmp_path / "x.safetensors")), {k: np.asarray(v) for k, v in fortran.items()})
    with safetensors.safe_open(str(tmp_path / "x.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}
    tensor_files.write(tmp_path / "y.safetensors", ARRAYS)
    assert (tmp_path / "y.safetensors").read_bytes() == safetensors.numpy.save(ARRAYS)


def test_npy_and_other_suffixes(tmp_path):
    np.save(tmp_path / "r.npy", ARRAYS["a"])
    _same(tensor_files.read(tmp_path / "r.npy"), {tensor_files.NPY_KEY: ARRAYS["a"]})
    tensor_files.write(tmp_path / "latents.npy", {"latents": ARRAYS["a"]})  # an npz by content, as before
    with np.load(tmp_path / "latents.npy") as f:
        np.testing.assert_array_equal(f["latents"], ARRAYS["a"])
    _same(tensor_files.read(tmp_path / "latents.npy"), {"latents": ARRAYS["a"]})


def test_pickles_are_refused_and_damage_is_unreadable(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        tensor_files.read(tmp_path / "o.npy")
    tensor_files.write(tmp_path / "x.npz", ARRAYS)
    data = (tmp_path / "x.npz").read_bytes()
    (tmp_path / "x.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(caches.UNREADABLE):
        tensor_files.read(tmp_path / "x.npz")
