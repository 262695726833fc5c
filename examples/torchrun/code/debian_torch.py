"""Debian's python3-torch without libuv: make the TCPStore's other backend the default.

Debian trixie's PyTorch (2.6.0+dfsg-7) is built without libuv, but torchrun's
rendezvous and ``init_process_group("gloo")`` in its workers create their TCPStore with
``use_libuv=True``, whatever the USE_LIBUV variable says, and fail at once ("use_libuv
was requested but PyTorch was build without libuv support"). Importing this module first
gives them a TCPStore whose default is ``use_libuv=False``. A PyTorch built with libuv
(PyPI's) needs none of this.
"""

import sys

import torch.distributed


class TCPStore(torch.distributed.TCPStore):
    def __init__(self, *args, use_libuv=False, **kwargs):
        super().__init__(*args, use_libuv=use_libuv, **kwargs)


# torch/distributed/rendezvous.py bound the name when torch.distributed was imported (and
# torch.distributed.rendezvous is a function there, hence sys.modules); the rest look it up
# when torchrun's modules are imported or called.
torch.distributed.TCPStore = TCPStore
sys.modules["torch.distributed.rendezvous"].TCPStore = TCPStore
