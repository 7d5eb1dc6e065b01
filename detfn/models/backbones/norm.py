"""Normalization layers of the backbones and the train-mode rules that go with them.

Detection fine-tunes ImageNet backbones with batches of 1-2 large images per device, too few for
reliable batch statistics. mmdetection therefore keeps BN statistics fixed (``norm_eval``) and
freezes the first stages (``frozen_stages``). detfn offers three norms:

* ``"BN"``: ``nn.BatchNorm2d``; affine parameters train, statistics stay fixed when ``norm_eval``.
* ``"FrozenBN"``: ``torchvision.ops.FrozenBatchNorm2d``; scale, shift and statistics are buffers,
  so nothing in it trains and a param/buffer split never sees it as a parameter.
* ``"GN"``: ``nn.GroupNorm`` with 32 groups, independent of the batch size (for training from
  scratch with small batches); it loads no BN statistics from an ImageNet file.
* ``"SyncBN"``: ``nn.SyncBatchNorm``, BN whose training-mode statistics are computed over the
  whole data-parallel batch (all ranks); the same state-dict names as BN. Under
  ``functional_call`` it synchronizes through the default process group, which must then be
  initialized with CUDA tensors (torch's SyncBN runs on GPUs only); with no group, or one
  process, it is plain BN. The ``func`` gradient backend does not support it.

A norm that is a fixed affine map (FrozenBN, or BN in eval mode: ``norm_eval``, inference) is
folded into the convolution before it by :func:`conv_norm`: ``conv(x, w * s) + b`` instead of
``conv(x, w) * s + b`` (:func:`detfn.ops.conv_affine.conv2d_affine`). That is the same function
(only float round-off differs), without two passes over every activation of the backbone in the
forward and one in the backward; the products with ``s`` run over the weights instead, and
gradients still reach BN's affine parameters through them.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from detfn.ops.conv_affine import conv2d_affine

__all__ = [
    "GN_GROUPS",
    "NORM_KINDS",
    "NormKind",
    "computes_statistics",
    "conv_norm",
    "fixed_affine",
    "freeze_",
    "has_trainable_affine",
    "make_norm",
    "set_batch_norm_eval_",
]

NormKind = Literal["BN", "FrozenBN", "GN", "SyncBN"]
NORM_KINDS: tuple[str, ...] = get_args(NormKind)

# Wu & He, "Group Normalization" (ECCV 2018) found 32 groups best on ImageNet; mmdet uses it too.
GN_GROUPS = 32


def make_norm(kind: NormKind, num_features: int) -> nn.Module:
    """A 2-d normalization layer over ``num_features`` channels.

    Raises:
        ValueError: an unknown ``kind``, or GN with channels not divisible by 32.
    """
    if kind == "BN":
        return nn.BatchNorm2d(num_features)
    if kind == "FrozenBN":
        return FrozenBatchNorm2d(num_features)
    if kind == "SyncBN":
        return nn.SyncBatchNorm(num_features)
    if kind == "GN":
        if num_features % GN_GROUPS:
            raise ValueError(
                f"GN needs channels divisible by {GN_GROUPS} groups, got {num_features} channels"
            )
        return nn.GroupNorm(GN_GROUPS, num_features)
    raise ValueError(f"norm must be one of {NORM_KINDS}, got {kind!r}")


def has_trainable_affine(norm: nn.Module) -> bool:
    """Whether ``norm`` has a scale parameter (BN, GN) rather than a frozen buffer (FrozenBN)."""
    return isinstance(getattr(norm, "weight", None), nn.Parameter)


def freeze_(module: nn.Module) -> None:
    """In place: stop training ``module``: eval mode and ``requires_grad=False`` on its parameters.

    The parameters stay parameters, so the module's state-dict names are unchanged; a training step
    that splits params from buffers by ``requires_grad`` treats them as constants.
    """
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)


def set_batch_norm_eval_(module: nn.Module) -> None:
    """In place: put every BatchNorm inside ``module`` in eval mode (mmdet's ``norm_eval``).

    Eval-mode BN normalizes with its running statistics and does not update them; its affine
    parameters still receive gradients.
    """
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()


def computes_statistics(module: nn.Module) -> bool:
    """A norm layer that normalizes by statistics of its input (GN, LN, IN, training-mode BN or
    BN without running statistics), not a fixed affine map."""
    if isinstance(module, (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)):
        return True
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (
        module.training or not module.track_running_stats
    )


def fixed_affine(norm: nn.Module) -> tuple[Tensor, Tensor] | None:
    """``(scale, shift)`` (Tensor[C] each) when ``norm`` maps ``x`` to ``x * scale + shift``
    per channel, independently of its input: FrozenBN, or BatchNorm that does not
    :func:`compute its statistics <computes_statistics>`. ``None`` otherwise."""
    if isinstance(norm, FrozenBatchNorm2d):
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    elif isinstance(norm, nn.modules.batchnorm._BatchNorm) and not computes_statistics(norm):
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.weight is not None:
            scale = norm.weight * scale
    else:
        return None
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(conv(x))``, with ``norm`` folded into the convolution's weight and bias when it is
    a fixed affine map (:func:`fixed_affine`; see the module docstring for why).

    Args:
        x (Tensor[B, C_in, H, W]): NCHW or channels-last; the output keeps the layout.
    """
    affine = fixed_affine(norm)
    if affine is None or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return norm(conv(x))
    scale, shift = affine
    bias = shift if conv.bias is None else shift + conv.bias * scale
    return conv2d_affine(
        x, conv.weight, scale, bias, conv.stride, conv.padding, conv.dilation, conv.groups
    )
