"""The autoencoders of the MoW paper's experiments, as ``torch.nn.Module`` s.

Every model is an :class:`Autoencoder`: an ``encoder`` from images ``(b, C, H, W)`` to latents
``(b, D)`` and a ``decoder`` back to images with values in ``[0, 1]`` (sigmoid output). Build one
by name with :func:`build_autoencoder`; :data:`ARCHS` lists the names and their metadata::

    >>> from mowtheory.train.models import build_autoencoder
    >>> ae = build_autoencoder("mnist")
    >>> ae.input_shape, ae.latent_dim
    ((1, 28, 28), 20)

Where the architectures come from
---------------------------------
MoW (Spurek, Knop, Tabor, Podolak, Wójcik), Appendix A, uses the architectures of the CWAE
paper (Tabor et al. 2018) for MNIST and CIFAR-10 and a WAE-style convolutional stack for
Fashion-MNIST and CelebA; FFHQ is trained at 1024×1024. The layer lists below were checked
against the authors' public code (``gmum/MoW`` for Fashion-MNIST, ``gmum/cwae`` and
``gmum/cwae-pytorch`` for MNIST and CIFAR-10, ``gmum/mow-pytorch`` for CelebA); each builder's
docstring says where the appendix text is ambiguous and which reading was taken. Where the
TensorFlow code and the later PyTorch port differ (the CIFAR-10 encoder's padding), the paper's
name builds the TensorFlow variant, the one the paper's experiments ran, and the port's has
its own name (``cifar10-padded``).

=========  ===========  =====  ==============================================================
name       input        D      layers
=========  ===========  =====  ==============================================================
mnist      1×28×28      20     FC 784-200-200-200-D / D-200-200-200-784 (ReLU, sigmoid out)
fashion    1×28×28      8      conv4×4/2 128-256-512-1024 → FC D / FC 7·7·1024 → deconv
cifar10    3×32×32      64     CWAE (TF code): unpadded conv2×2 (3, 32/2, 32, 32) → FC 128 → D
cifar10-p  3×32×32      64     ``cifar10-padded``: the PyTorch port's padded convolutions
celeba     3×64×64      32     WAE: conv4×4/2 128-256-512-1024 → D / FC 8·8·1024 → deconv
ffhq       3×R×R        64     ours: log2(R)−2 stride-2 stages down to 4×4, R = 1024 default
digits     1×8×8        8      ours: FC 64-128-64-D / D-64-128-64
=========  ===========  =====  ==============================================================

Batch statistics
----------------
MoW encodes k = 1 example per step, so nothing here uses BatchNorm: the statistics of a batch
of one example would be degenerate (BatchNorm1d refuses it in training mode; BatchNorm2d
silently turns into instance normalisation and then disagrees with its running statistics in
evaluation mode). Where the reference architecture uses BatchNorm (CelebA) it is replaced by
``GroupNorm``, which normalises each example on its own, so a model gives the same output for
an example whatever else is in its batch. Every model accepts any batch size, including 1.
"""
from __future__ import annotations

import math
from typing import Callable

from torch import nn

from mowtheory._validate import check_choice, check_int

__all__ = ["Autoencoder", "ARCHS", "build_autoencoder"]


from .layers import (Autoencoder, _group_norm, _mlp, _resolution,  # noqa: F401
                     _same_conv, _same_pad, _Unflatten)


# Architectures


def _mnist(latent_dim: int, resolution: int, channels: int) -> Autoencoder:
    """MNIST (paper Appendix A, from CWAE): fully connected, latent 20.

    Encoder ``C·H·W → 200 → 200 → 200 → D``, ReLU after each hidden layer, linear output.
    Decoder ``D → 200 → 200 → 200 → C·H·W`` with sigmoid output.

    Ambiguity: the appendix lists the decoder as "three feed-forward ReLU layers, 200 neurons
    each", which read literally has no layer producing the 784 pixels. We add a linear
    ``200 → 784`` output layer with a sigmoid (as the authors' code does) instead of making the
    third 200-unit layer the output, which could not produce a 28×28 image.
    """
    d = channels * resolution * resolution
    enc = nn.Sequential(nn.Flatten(1), *_mlp([d, 200, 200, 200, latent_dim], last=None))
    dec = nn.Sequential(*_mlp([latent_dim, 200, 200, 200, d], last=nn.Sigmoid()),
                        _Unflatten(channels, resolution, resolution))
    return Autoencoder(enc, dec, latent_dim=latent_dim,
                       input_shape=(channels, resolution, resolution), arch="mnist")


def _digits(latent_dim: int, resolution: int, channels: int) -> Autoencoder:
    """sklearn digits 8×8 (ours): fully connected ``64 → 128 → 64 → D``, mirrored decoder with
    sigmoid output. Small enough to train to convergence on a laptop CPU in seconds."""
    d = channels * resolution * resolution
    enc = nn.Sequential(nn.Flatten(1), *_mlp([d, 128, 64, latent_dim], last=None))
    dec = nn.Sequential(*_mlp([latent_dim, 64, 128, d], last=nn.Sigmoid()),
                        _Unflatten(channels, resolution, resolution))
    return Autoencoder(enc, dec, latent_dim=latent_dim,
                       input_shape=(channels, resolution, resolution), arch="digits")


def _fashion(latent_dim: int, resolution: int, channels: int) -> Autoencoder:
    """Fashion-MNIST (paper Appendix A): convolutional, latent 8, no normalisation layers.

    Encoder: four 4×4 convolutions with stride 2 and 128, 256, 512, 1024 channels, each followed
    by ReLU, with TensorFlow "SAME" padding (28 → 14 → 7 → 4 → 2; padding is asymmetric on the
    odd size 7), flatten (2·2·1024) and a linear layer to D.
    Decoder: linear ``D → 7·7·1024`` (no activation, as in the authors' code), two 4×4
    transposed convolutions with stride 2 (512, 256 channels, ReLU; 7 → 14 → 28) and a 4×4
    stride-1 "SAME" layer to C channels with sigmoid.

    Ambiguities: the authors' last layer is a stride-1 transposed convolution with
    ``(tanh + 1)/2``; a stride-1 transposed convolution is a convolution with a flipped kernel,
    so we use a 4×4 convolution (asymmetric zero padding 1/2), and ``(tanh(h) + 1)/2 =
    sigmoid(2h)`` is the sigmoid up to a scale absorbed by the weights.
    ``resolution`` (a multiple of 4) generalises the 28 of the paper.
    """
    layers: list[nn.Module] = []
    size, cin = resolution, channels
    for cout in (128, 256, 512, 1024):
        conv, size = _same_conv(cin, cout, 4, 2, size)
        layers += [*conv, nn.ReLU()]
        cin = cout
    enc = nn.Sequential(*layers, nn.Flatten(1), nn.Linear(1024 * size * size, latent_dim))
    s0 = resolution // 4
    out_conv, _ = _same_conv(256, channels, 4, 1, resolution)
    dec = nn.Sequential(
        nn.Linear(latent_dim, 1024 * s0 * s0), _Unflatten(1024, s0, s0),
        nn.ConvTranspose2d(1024, 512, 4, 2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(512, 256, 4, 2, padding=1), nn.ReLU(),
        *out_conv, nn.Sigmoid(),
    )
    return Autoencoder(enc, dec, latent_dim=latent_dim,
                       input_shape=(channels, resolution, resolution), arch="fashion")


def _cifar10_decoder(latent_dim: int, resolution: int, channels: int) -> nn.Sequential:
    """The CIFAR-10 decoder of CWAE (the same in the TensorFlow code and in the PyTorch port)."""
    h = resolution // 2
    return nn.Sequential(
        nn.Linear(latent_dim, 128), nn.ReLU(),
        nn.Linear(128, 32 * h * h), nn.ReLU(), _Unflatten(32, h, h),
        # TF conv2d_transpose(2×2, stride 1, SAME) keeps the size: pad right/bottom, crop 1.
        nn.ZeroPad2d((0, 1, 0, 1)), nn.ConvTranspose2d(32, 32, 2, 1, padding=1), nn.ReLU(),
        nn.ZeroPad2d((0, 1, 0, 1)), nn.ConvTranspose2d(32, 32, 2, 1, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 3, 2), nn.ReLU(),          # h -> 2h + 1 = r + 1
        nn.Conv2d(32, channels, 2), nn.Sigmoid(),              # r + 1 -> r
    )


def _cifar10_valid_sizes(resolution: int) -> tuple[int, int, int, int]:
    """Feature-map sides of the unpadded (TensorFlow "valid") CIFAR-10 encoder on a
    ``resolution``² input: after the 2×2 stride-1, 2×2 stride-2, 2×2 and 2×2 convolutions
    (``(32, 32)`` → ``(31, 15, 14, 13)``; the flattened features are ``32 · 13² = 5408``)."""
    a = resolution - 1
    b = (a - 2) // 2 + 1
    return a, b, b - 1, b - 2


def _cifar10(latent_dim: int, resolution: int, channels: int) -> Autoencoder:
    """CIFAR-10, the paper's architecture (Appendix A, from CWAE), as in the authors'
    TensorFlow code (``gmum/cwae``, which ``gmum/MoW`` builds on): convolutional, latent 64, no
    normalisation.

    Encoder: four 2×2 convolutions with ReLU and **no padding** (TF ``conv2d`` defaults to
    ``"valid"``) — 3 channels stride 1, 32 channels stride 2, 32 stride 1, 32 stride 1, so
    32 → 31 → 15 → 14 → 13 — flatten (13·13·32 = 5408), linear 128 + ReLU, linear to D.
    Decoder: linear 128 + ReLU, linear 8192 + ReLU, reshape to 32×16×16, two 2×2 "SAME"
    transposed convolutions (32 channels, ReLU), a 3×3 stride-2 transposed convolution
    (32 channels, ReLU; 16 → 33) and a 2×2 "valid" convolution to C channels with sigmoid
    (33 → 32). (TF reshapes the 8192 features channels-last, PyTorch channels-first: the same
    family of functions, the dense layer's outputs permuted.)

    Ambiguity: the appendix calls the last decoder layer a 2×2 *transposed* convolution, which
    would turn 33 into 34 pixels; the authors' code uses an ordinary 2×2 convolution, the only
    reading that yields 32×32, and so do we. ``resolution`` (even, ``>= 8``) generalises the
    32. The padded variant of the later PyTorch port is ``"cifar10-padded"``.
    """
    r = resolution
    side = _cifar10_valid_sizes(r)[-1]
    enc = nn.Sequential(
        nn.Conv2d(channels, 3, 2), nn.ReLU(),
        nn.Conv2d(3, 32, 2, 2), nn.ReLU(),
        nn.Conv2d(32, 32, 2), nn.ReLU(),
        nn.Conv2d(32, 32, 2), nn.ReLU(),
        nn.Flatten(1), nn.Linear(32 * side * side, 128), nn.ReLU(), nn.Linear(128, latent_dim),
    )
    return Autoencoder(enc, _cifar10_decoder(latent_dim, r, channels), latent_dim=latent_dim,
                       input_shape=(channels, r, r), arch="cifar10")


def _cifar10_padded(latent_dim: int, resolution: int, channels: int) -> Autoencoder:
    """CIFAR-10 as in the later PyTorch port of CWAE (``gmum/cwae-pytorch``), **not** the
    paper's TensorFlow code: the stride-1 encoder convolutions are zero-padded on the
    right/bottom, so 32 → 32 → 16 → 16 → 16 and the flattened features are 16·16·32 = 8192.
    Otherwise as :func:`_cifar10` (same decoder). ``resolution``: even."""
    r, h = resolution, resolution // 2
    enc = nn.Sequential(
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(channels, 3, 2), nn.ReLU(),
        nn.Conv2d(3, 32, 2, 2), nn.ReLU(),
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(32, 32, 2), nn.ReLU(),
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(32, 32, 2), nn.ReLU(),
        nn.Flatten(1), nn.Linear(32 * h * h, 128), nn.ReLU(), nn.Linear(128, latent_dim),
    )
    return Autoencoder(enc, _cifar10_decoder(latent_dim, r, channels), latent_dim=latent_dim,
                       input_shape=(channels, r, r), arch="cifar10-padded")


def _celeba(latent_dim: int, resolution: int, channels: int) -> Autoencoder:
    """CelebA 64×64 (paper Appendix A; the WAE CelebA stack): convolutional, latent 32.

    Encoder: four 4×4 convolutions with stride 2 and padding 1 (128, 256, 512, 1024 channels;
    64 → 32 → 16 → 8 → 4), each followed by a normalisation and ReLU, flatten (4·4·1024) and a
    linear layer to D.
    Decoder: linear ``D → 8·8·1024``, three 4×4 stride-2 transposed convolutions (512, 256, 128
    channels; 8 → 16 → 32 → 64) each followed by a normalisation and ReLU, and a 3×3 stride-1
    convolution to C channels with sigmoid (the reference's stride-1 *transposed* convolution is
    the same function class; an ordinary convolution gets a sensible default initialisation).

    Substitution: the reference uses BatchNorm after every convolution. We use GroupNorm
    (32 groups) in the encoder *and* decoder, so that a batch of one example (MoW with k = 1)
    is normalised by its own statistics in training and evaluation alike. The reference output
    ``(tanh + 1)/2`` is a sigmoid up to a factor 2 absorbed by the weights.
    ``resolution`` (a multiple of 16) generalises the 64.
    """
    layers: list[nn.Module] = []
    cin = channels
    for cout in (128, 256, 512, 1024):
        layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), _group_norm(cout), nn.ReLU()]
        cin = cout
    s_enc, s_dec = resolution // 16, resolution // 8
    enc = nn.Sequential(*layers, nn.Flatten(1), nn.Linear(1024 * s_enc * s_enc, latent_dim))
    dlayers: list[nn.Module] = [nn.Linear(latent_dim, 1024 * s_dec * s_dec),
                                _Unflatten(1024, s_dec, s_dec)]
    cin = 1024
    for cout in (512, 256, 128):
        dlayers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), _group_norm(cout),
                    nn.ReLU()]
        cin = cout
    # A stride-1 transposed convolution is a convolution (flipped kernel); nn.Conv2d gets the
    # right fan-in for its default initialisation, where nn.ConvTranspose2d would compute it
    # from the 3 output channels and start with a saturated sigmoid.
    dec = nn.Sequential(*dlayers, nn.Conv2d(128, channels, 3, 1, 1), nn.Sigmoid())
    return Autoencoder(enc, dec, latent_dim=latent_dim,
                       input_shape=(channels, resolution, resolution), arch="celeba")


def ffhq_channels(size: int) -> int:
    """Feature channels of the ``ffhq`` model at spatial size ``size``: ``min(256, 8192/size)``
    (8 at 1024², 16 at 512², …, 256 from 32² down), so memory per stage stays bounded."""
    return max(1, min(256, 8192 // size))


def _ffhq(latent_dim: int, resolution: int, channels: int) -> Autoencoder:
    """FFHQ (ours, sized for the paper's 1024×1024 experiment): convolutional, latent 64.

    ``S = log2(resolution) − 2`` stride-2 stages take ``resolution`` down to 4×4; the stage
    producing spatial size ``s`` has :func:`ffhq_channels` ``(s) = min(256, 8192/s)`` channels.
    Encoder: a stage is a 4×4 stride-2 convolution (padding 1), GroupNorm and ReLU; then
    flatten (256·4·4) and a linear layer to D.
    Decoder: linear ``D → 256·4·4``, ``S`` stages of 4×4 stride-2 transposed convolution,
    GroupNorm and ReLU, and a 3×3 convolution to C channels with sigmoid.

    The paper reports training at 1024×1024 but gives no layer list we can reproduce exactly,
    so this is a resolution-adaptive DCGAN/WAE-style stack: the same layers at the small end
    for every resolution, one more stage each time the resolution doubles, so that memory can
    be measured against resolution. GroupNorm (not BatchNorm) keeps examples independent.
    """
    stages = int(math.log2(resolution)) - 2
    layers: list[nn.Module] = []
    size, cin = resolution, channels
    for _ in range(stages):
        size //= 2
        cout = ffhq_channels(size)
        layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), _group_norm(cout), nn.ReLU()]
        cin = cout
    enc = nn.Sequential(*layers, nn.Flatten(1), nn.Linear(cin * 4 * 4, latent_dim))
    dlayers: list[nn.Module] = [nn.Linear(latent_dim, cin * 4 * 4), _Unflatten(cin, 4, 4)]
    size = 4
    for _ in range(stages):
        size *= 2
        cout = ffhq_channels(size)
        dlayers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), _group_norm(cout),
                    nn.ReLU()]
        cin = cout
    dec = nn.Sequential(*dlayers, nn.Conv2d(cin, channels, 3, 1, 1), nn.Sigmoid())
    return Autoencoder(enc, dec, latent_dim=latent_dim,
                       input_shape=(channels, resolution, resolution), arch="ffhq")


def _pow2(r: int) -> bool:
    return r >= 16 and r & (r - 1) == 0


#: name -> metadata. ``latent_dim`` and ``input_shape`` are the defaults (the paper's);
#: ``resolution`` says which resolutions ``build_autoencoder`` accepts.
ARCHS: dict[str, dict] = {
    "mnist": {
        "latent_dim": 20, "input_shape": (1, 28, 28), "source": "paper Appendix A",
        "description": "fully connected 784-200-200-200-20, mirrored decoder, sigmoid output "
                       "(MNIST, from the CWAE paper)",
        "resolution": "any integer >= 1 (fully connected)",
    },
    "fashion": {
        "latent_dim": 8, "input_shape": (1, 28, 28), "source": "paper Appendix A",
        "description": "4x4 stride-2 convolutions 128-256-512-1024, linear to latent; "
                       "linear to 7x7x1024 and transposed convolutions (Fashion-MNIST)",
        "resolution": "a multiple of 4",
    },
    "cifar10": {
        "latent_dim": 64, "input_shape": (3, 32, 32), "source": "paper Appendix A",
        "description": "unpadded 2x2 convolutions (3, 32 stride 2, 32, 32: 32->31->15->14->13, "
                       "flatten 5408), dense 128; decoder dense 128, 8192, transposed "
                       "convolutions (CIFAR-10, the CWAE/MoW TensorFlow code)",
        "resolution": "an even integer >= 8",
    },
    "cifar10-padded": {
        "latent_dim": 64, "input_shape": (3, 32, 32), "source": "authors' PyTorch port",
        "description": "as cifar10 but the stride-1 encoder convolutions padded right/bottom "
                       "(32->32->16->16->16, flatten 8192), as in gmum/cwae-pytorch",
        "resolution": "an even integer >= 2",
    },
    "celeba": {
        "latent_dim": 32, "input_shape": (3, 64, 64), "source": "paper Appendix A",
        "description": "4x4 stride-2 convolutions 128-256-512-1024 with GroupNorm in place of "
                       "BatchNorm; linear to 8x8x1024 and transposed convolutions (CelebA 64x64)",
        "resolution": "a multiple of 16",
    },
    "ffhq": {
        "latent_dim": 64, "input_shape": (3, 1024, 1024), "source": "ours",
        "description": "log2(R)-2 stride-2 conv stages (channels min(256, 8192/size)) with "
                       "GroupNorm down to 4x4, mirrored decoder (FFHQ, R = 1024 by default)",
        "resolution": "a power of two >= 16",
    },
    "digits": {
        "latent_dim": 8, "input_shape": (1, 8, 8), "source": "ours",
        "description": "fully connected 64-128-64-8, mirrored decoder, sigmoid output "
                       "(sklearn digits 8x8)",
        "resolution": "any integer >= 1 (fully connected)",
    },
}

_BUILDERS: dict[str, tuple[Callable[..., Autoencoder], Callable[[int], bool]]] = {
    "mnist": (_mnist, lambda r: r >= 1),
    "fashion": (_fashion, lambda r: r % 4 == 0),
    "cifar10": (_cifar10, lambda r: r % 2 == 0 and r >= 8),
    "cifar10-padded": (_cifar10_padded, lambda r: r % 2 == 0),
    "celeba": (_celeba, lambda r: r % 16 == 0),
    "ffhq": (_ffhq, _pow2),
    "digits": (_digits, lambda r: r >= 1),
}


def build_autoencoder(arch: str, *, latent_dim: int | None = None, resolution: int | None = None,
                      channels: int | None = None) -> Autoencoder:
    """Build the autoencoder named ``arch`` (a key of :data:`ARCHS`).

    Parameters
    ----------
    arch : str
        ``"mnist"``, ``"fashion"``, ``"cifar10"``, ``"cifar10-padded"``, ``"celeba"``,
        ``"ffhq"`` or ``"digits"``.
    latent_dim : int, optional
        Latent dimension D; default ``ARCHS[arch]["latent_dim"]`` (the paper's).
    resolution : int, optional
        Image height = width; default ``ARCHS[arch]["input_shape"][1]``. What each
        architecture accepts is ``ARCHS[arch]["resolution"]`` (``ffhq``: a power of two
        >= 16, the number of stride-2 stages adapts).
    channels : int, optional
        Image channels C; default ``ARCHS[arch]["input_shape"][0]``.

    Returns
    -------
    Autoencoder
        Encoder ``(b, C, H, W) -> (b, D)``, decoder ``(b, D) -> (b, C, H, W)`` in ``[0, 1]``.

    Raises
    ------
    ValueError
        Unknown ``arch`` (the message lists the valid names), or a ``latent_dim``,
        ``resolution`` or ``channels`` the architecture cannot take.
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a string, one of {', '.join(map(repr, ARCHS))}; "
                        f"got arch={arch!r}")
    check_choice("arch", arch, ARCHS)
    meta = ARCHS[arch]
    d = meta["latent_dim"] if latent_dim is None else check_int("latent_dim", latent_dim, low=1)
    c = meta["input_shape"][0] if channels is None else check_int("channels", channels, low=1)
    builder, ok = _BUILDERS[arch]
    r = _resolution(arch, resolution, meta["input_shape"][1], ok=ok, allowed=meta["resolution"])
    return builder(d, r, c)
