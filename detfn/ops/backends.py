"""One switch for the kernels detfn substitutes on the CPU: back to torch's and torchvision's.

detfn computes two operators its own way where that is faster: RoIAlign as a sparse matrix
product (:mod:`detfn.ops.roi_align_sparse`) and 3x3 convolutions by Winograd's algorithm
(:mod:`detfn.ops.winograd`). Both are the same mathematics as the library kernels, to
round-off. Exporting needs the library kernels, which ``torch.export`` and ONNX know as single
operators (``torchvision::roi_align``, ``aten.convolution``); so does a comparison that wants
the very same round-off as torchvision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from detfn.ops.roi_align import auto_backend
from detfn.ops.winograd import conv_backend

__all__ = ["reference_kernels"]


@contextlib.contextmanager
def reference_kernels() -> Iterator[None]:
    """Within the block, "auto" RoIAlign runs torchvision's kernel and "auto" 3x3 convolutions
    torch's (``F.conv2d``)."""
    with auto_backend("torchvision"), conv_backend("direct"):
        yield
