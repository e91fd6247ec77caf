"""Transfer learning: weights from PyTorch, from files or other models, and new heads.

:func:`from_torch` and :func:`to_torch_state_dict` convert between a PyTorch twin's
``state_dict`` and a built model; :func:`load_pretrained` copies params and state by flat name;
:func:`replace_head` swaps the last layers and keeps the body's weights. A transfer checks
everything before it assigns anything and returns a :class:`TransferReport` (a table).
"""

from wframe.transfer.pretrained import load_pretrained, replace_head
from wframe.transfer.pytorch import from_torch, to_torch_state_dict
from wframe.transfer.report import TransferReport

__all__ = ["TransferReport", "from_torch", "load_pretrained", "replace_head", "to_torch_state_dict"]
