"""Other frameworks' files, told apart from safetensors: the suffixes a wframe file must not
wear (a ``"w.h5"`` that is not HDF5 misleads its reader), what a foreign file looks like from its
first bytes, and what to do with it instead."""

from __future__ import annotations

from wframe.file_names import FOREIGN_SUFFIXES, check_suffix

__all__ = ["FOREIGN_SUFFIXES", "check_suffix", "foreign_fixes", "looks_like"]


def foreign_fixes(prefix: bytes) -> list[str]:
    """What to do with a file of another framework, from its first bytes (``[]``: nothing
    to say)."""
    reads = (
        "wframe reads only safetensors files (what save_weights, save_model and checkpoints "
        "write) and never unpickles; "
    )
    torch = (
        "for PyTorch weights: wf.transfer.from_torch(model, torch_module) or "
        "from_torch(model, torch.load(path, weights_only=True))"
    )
    if prefix.startswith((b"\x89HDF\r\n\x1a\n", b"PK\x03\x04", b"PK\x05\x06")):
        keras = (
            "for Keras weights: load the model in Keras and copy its arrays into the built "
            "wframe model with wf.transfer.load_pretrained(model, {'dense_0/W': kernel, ...}); "
        )
        return [reads + keras + torch]
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return [reads + torch]
    return []


def looks_like(prefix: bytes) -> str:
    """What a non-safetensors file seems to be, from its first bytes."""
    kinds = [
        (b"PK", "a zip archive (an .npz, .keras or PyTorch file?)"),
        (b"\x93NUMPY", "a NumPy .npy file"),
        (b"\x89HDF", "an HDF5 (.h5) file"),
        (b"\x80", "a Python pickle (never unpickled here)"),
    ]
    for magic, kind in kinds:
        if prefix.startswith(magic):
            return f"; it looks like {kind}"
    if prefix and all(32 <= c < 127 or c in b"\t\n\r" for c in prefix):
        return "; it looks like text"
    return ""
