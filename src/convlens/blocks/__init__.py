"""Building blocks from the literature, as plain PyTorch modules (see each class for its source).

- ``ContextModule``, ``dilated_frontend``, ``dilation_net``: Yu & Koltun 2016, identity-initialised.
- ``KroneckerConv2d`` and ``compose``: Kronecker-factored kernels; the one kernel of a linear stack.
- ``DepthwiseSeparableConv2d``, ``SpatiallySeparableConv2d``, ``ShuffledGroupConv2d``, ``ResizeConv2d``.
- ``ASPP``: DeepLabv3's atrous spatial pyramid pooling head.
"""

from .dilated import CONTEXT_DILATIONS, ContextModule, dilated_frontend, dilation_net
from .factorized import (ASPP, DepthwiseSeparableConv2d, ResizeConv2d, ShuffledGroupConv2d,
                         SpatiallySeparableConv2d)
from .kernels import KroneckerConv2d, compose

__all__ = ["ASPP", "CONTEXT_DILATIONS", "ContextModule", "DepthwiseSeparableConv2d", "KroneckerConv2d",
           "ResizeConv2d", "ShuffledGroupConv2d", "SpatiallySeparableConv2d", "compose", "dilated_frontend",
           "dilation_net"]
