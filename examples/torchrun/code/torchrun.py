"""``python3 torchrun.py ARGS`` is ``torchrun ARGS`` for Debian's python3-torch.

It runs torchrun itself (``torch.distributed.run.main``, the same arguments and
behaviour) after :mod:`debian_torch`, without which Debian's torchrun cannot create its
rendezvous store.
"""

import sys

import debian_torch  # noqa: F401 - before torchrun's modules bind TCPStore
from torch.distributed.run import main

if __name__ == "__main__":
    sys.exit(main())
