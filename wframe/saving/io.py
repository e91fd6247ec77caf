"""Safetensors files, read and written safely: the public face of the format (a model's
weights are :mod:`wframe.saving.weights`).

- Writes (:mod:`.writer`) go to a temporary file in the same folder, fsync, ``os.replace``: a
  crash leaves the old file or the new one, never a torn one. Devices, FIFOs, sockets and
  read-only files are refused, symlinks written through, leftovers of killed writes removed.
- Every file written records a checksum of each tensor (:mod:`.integrity`), verified while
  reading unless ``verify=False``.
- Reads (:mod:`.reader`) check the whole header against the file size before allocating
  anything (:mod:`.header`), never unpickle, and raise one :class:`WeightsFileError` listing
  every problem.
- A model too large for one file is split into shards with a JSON index in Hugging Face's
  layout (:mod:`.shards`); every reader takes the index.
"""

from __future__ import annotations

import os  # noqa: F401 (the writer's modules, which tests patch: io.os.fsync, io.tempfile.mkstemp)
import tempfile  # noqa: F401

from wframe.saving.errors import WeightsFileError, file_error
from wframe.saving.header import MAX_HEADER
from wframe.saving.reader import Header, read_header, read_metadata, read_safetensors, read_tensors
from wframe.saving.shards import index_path, parse_size
from wframe.saving.writer import remove_stale, write_safetensors

FORMAT_VERSION = "1"
STATE_PREFIX, MASK_PREFIX = "@state/", "@mask/"

__all__ = [
    "FORMAT_VERSION",
    "MASK_PREFIX",
    "MAX_HEADER",
    "STATE_PREFIX",
    "Header",
    "WeightsFileError",
    "file_error",
    "index_path",
    "parse_size",
    "read_header",
    "read_metadata",
    "read_safetensors",
    "read_tensors",
    "remove_stale",
    "write_safetensors",
]
