"""fused_ops: Triton kernels for PyTorch, as drop-in autograd ops and optimizers.

    >>> import fused_ops
    >>> y = fused_ops.sigmoid(x)          # instead of torch.sigmoid(x)

Ops run as compiled Triton on a GPU, in Triton's interpreter on CPU tensors when
``TRITON_INTERPRET=1`` is set before import, and otherwise on an eager PyTorch reference
(see :mod:`fused_ops._dispatch`).
"""

__version__ = "0.1.0"

from . import nn, optim
from .activations import gelu, relu, sigmoid, silu, tanh
from .cross_entropy import cross_entropy
from .linear_cross_entropy import linear_cross_entropy
from .mse import mse_loss
from .patch import patch
from .softmax import log_softmax, softmax

__all__ = [
    "__version__",
    "cross_entropy",
    "gelu",
    "linear_cross_entropy",
    "log_softmax",
    "mse_loss",
    "nn",
    "optim",
    "patch",
    "relu",
    "sigmoid",
    "silu",
    "softmax",
    "tanh",
]
