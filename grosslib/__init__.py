"""grosslib: Group-size Series (GroSS) decomposition of convolutional networks.

Core (this package's top level): :func:`btd` and :func:`btd_series` decompose a conv weight,
:class:`Bottleneck` runs one decomposition as 1x1 -> grouped kxk -> 1x1, :func:`psi` expands a
grouped weight, :class:`GroSSConv2d` holds every group size as a series, and
:class:`GroupSizeSampler` draws group sizes during training. :func:`decompose`, :func:`set_config` and
:func:`export` turn any CNN into a GroSS network, choose its configuration and export it to plain convs.
Submodules: ``data``, ``models``, ``resnet``, ``train``, ``macs``, ``latency``, ``search``, ``evolution``,
``pipeline``.
"""
from .bottleneck import Bottleneck
from .btd import BTDResult, btd, btd_series
from .models import decompose, export, set_config
from .psi import psi
from .sampling import GroupSizeSampler
from .series import GroSSConv2d, default_group_sizes

__all__ = ["BTDResult", "Bottleneck", "GroSSConv2d", "GroupSizeSampler", "btd", "btd_series",
           "decompose", "default_group_sizes", "export", "psi", "set_config"]
__version__ = "0.1.0"
