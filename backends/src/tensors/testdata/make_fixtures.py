"""Writes the numpy fixtures read by the tests in backends/src/tensors/.

Run from this folder with numpy installed: `python3 make_fixtures.py`. The files are
committed, so the Rust tests do not need Python. Keep them tiny.
"""

import numpy as np
from numpy.lib import format as npf

# One small array per numpy dtype that ONNX has, written by np.save (format 1.0).
DTYPES = {
    "f2": np.array([[1.5, -2.0, 0.0]], dtype="<f2"),
    "f4": np.arange(6, dtype="<f4").reshape(2, 3) - 2.5,
    "f8": np.array([1e300, -0.0, np.pi], dtype="<f8"),
    "i1": np.array([-128, 0, 127], dtype="|i1"),
    "i2": np.array([-32768, 1, 32767], dtype="<i2"),
    "i4": np.array([-(2**31), 7, 2**31 - 1], dtype="<i4"),
    "i8": np.array([-(2**63), 7, 2**63 - 1], dtype="<i8"),
    "u1": np.array([0, 1, 255], dtype="|u1"),
    "u2": np.array([0, 1, 65535], dtype="<u2"),
    "u4": np.array([0, 1, 2**32 - 1], dtype="<u4"),
    "u8": np.array([0, 1, 2**64 - 1], dtype="<u8"),
    "b1": np.array([[True, False], [False, True]]),
    "c8": np.array([1 + 2j, -3.5j], dtype="<c8"),
    "c16": np.array([1 + 2j, -3.5j], dtype="<c16"),
}
for name, a in DTYPES.items():
    np.save(f"{name}.npy", a)

np.save("scalar.npy", np.float64(3.5))
np.save("empty.npy", np.zeros((0, 3), dtype="<f4"))
np.save("unicode.npy", np.array([["a", "héllo"], ["日本", ""]], dtype="<U5"))
np.save("bytes.npy", np.array([b"ab", b"\x00x", b""], dtype="|S3"))
np.save("fortran.npy", np.asfortranarray(np.arange(24, dtype="<i4").reshape(2, 3, 4)))
np.save("fortran_str.npy", np.asfortranarray(np.array([["a", "bb", "c"], ["d", "e", "ff"]])))
np.save("big_endian_i4.npy", np.array([[1, -2], [3, 70000]], dtype=">i4"))
np.save("big_endian_c8.npy", np.array([1 + 2j, -3.5j], dtype=">c8"))
np.save("big_endian_u2str.npy", np.array(["hé", "x"], dtype=">U2"))
with open("v2.npy", "wb") as f:
    npf.write_array(f, np.array([1, 2, 3], dtype="<i8"), version=(2, 0))
with open("v3.npy", "wb") as f:
    npf.write_array(f, np.array([1, 2, 3], dtype="<i8"), version=(3, 0))
np.save("object.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
np.save("void.npy", np.zeros(3, dtype="V2"))  # what ml_dtypes' bfloat16 looks like on disk

# Archives: tf2onnx-style names and a path-like name; stored and deflated.
ARCHIVE = {
    "input:0": np.arange(4, dtype="<f4").reshape(2, 2),
    "a/b": np.array([1, 2, 3], dtype="<i8"),
    "mask": np.array([True, False]),
}
np.savez("names.npz", **ARCHIVE)
np.savez_compressed("names_deflated.npz", **ARCHIVE)
