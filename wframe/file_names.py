"""The names of the files wframe writes: safetensors, never under another format's suffix.

A ``"w.h5"`` that is not HDF5 misleads its reader, so every writer (and a callback given a
path to write later, such as :class:`~wframe.callbacks.ModelCheckpoint`, at construction) warns
about such a name, naming the suffix to use; the file is safetensors whatever its name.
What a foreign file looks like from its bytes is :mod:`wframe.saving.formats`'.
"""

from __future__ import annotations

import os
import warnings

#: Suffixes of other formats, which a safetensors file must not wear: a user would take the
#: file for one and the tool for that format could not read it.
FOREIGN_SUFFIXES = {
    ".h5": "an HDF5 file (Keras' .h5 and .weights.h5)",
    ".hdf5": "an HDF5 file",
    ".keras": "a Keras 3 model archive",
    ".pt": "a PyTorch file (torch.save)",
    ".pth": "a PyTorch file (torch.save)",
    ".pkl": "a Python pickle",
    ".pickle": "a Python pickle",
    ".joblib": "a joblib pickle",
    ".npz": "a NumPy .npz archive",
    ".npy": "a NumPy .npy file",
    ".onnx": "an ONNX model",
}


def check_suffix(path: str | os.PathLike) -> None:
    """Warn when ``path``'s suffix names another format (``"w.h5"``, ``"m.keras"``): wframe
    writes safetensors, whatever the name says, and tools for that format will not read it.

    Warns:
      UserWarning: naming the format the suffix stands for and the name to use instead.
    """
    stem, suffix = os.path.splitext(os.fspath(path))
    kind = FOREIGN_SUFFIXES.get(suffix.lower())
    if kind is not None:
        warnings.warn(
            f"{os.fspath(path)!r}: wframe writes safetensors files, but the suffix {suffix!r} "
            f"names {kind}, which the file will not be (and tools for that format cannot "
            f"read it); use the suffix '.safetensors': {stem + '.safetensors'!r}",
            UserWarning,
            stacklevel=3,
        )
