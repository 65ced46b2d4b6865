"""Frechet distance between image sets: an offline FID analogue, and standard FID when possible.

FID (Heusel et al. 2017) fits a Gaussian to each set's features and measures

    FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

:func:`frechet_score` uses EfficientNet-Lite0's 1280-d pooled ImageNet features (shipped with
its PyPI package, so no download), which makes it an FID *analogue*: its values are not
comparable with published FIDs, and like FID it is biased upwards for small sets, so the set sizes
are always reported with it. :func:`torchmetrics_fid` gives standard FID (Inception-v3, 2048-d)
through torchmetrics when it and local Inception weights are available.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from scdpo.cost.backbone import DEFAULT_BACKBONE, Backbone, image_backbone

ENV_INCEPTION = "SCDPO_INCEPTION_WEIGHTS"


def frechet_distance(feats_a, feats_b, device: str | torch.device | None = None) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

    With the centred features ``A`` and ``B`` (so ``S_a = A^T A / (N_a - 1)``, likewise ``S_b``),

        Tr((S_a S_b)^(1/2)) = ||A B^T||_* / sqrt((N_a - 1)(N_b - 1)),

    the nuclear norm (sum of singular values) of the (N_a, N_b) cross-Gram matrix: the non-zero
    eigenvalues of ``A^T A B^T B`` and of ``(A B^T)(A B^T)^T`` are the same (``XY`` and ``YX``
    share them: Horn & Johnson, *Matrix Analysis*, Thm. 1.3.22), and the latter's are the squared
    singular values of ``A B^T``, so real and non-negative, singular covariances included. A set with more samples
    than dimensions is first replaced by the R of its QR factorisation (``A^T A = R^T R``), so the
    SVD is of a matrix at most (min(N_a, D), min(N_b, D)). No D x D square root is formed: the result
    is real by construction (no complex parts to discard, unlike ``scipy.linalg.sqrtm`` of a
    non-symmetric product), stable when the covariances are singular (N < D), and at the eval's
    sizes (about 400 images a suite, D = 1280) 30x faster on one CPU thread than the two
    1280 x 1280 eigendecompositions it replaced (0.018 against 0.525 s; as fast, 0.9x, when both sets
    have more samples than dimensions). Those agree with it to about 3e-8 relative, their own error:
    against a 40-digit reference (30 and 25 samples, D = 300) this algebra was exact to float64 and
    theirs 2.8e-8 off (benchmarks/frechet_speed.py; docs/evaluation.md).

    ``device``: where the float64 algebra runs (default: the CPU); :func:`frechet_score` passes a
    CUDA backbone's device, where a large reference's QR is faster.
    """
    a = feats_a.detach() if isinstance(feats_a, torch.Tensor) else torch.as_tensor(np.asarray(feats_a))
    b = feats_b.detach() if isinstance(feats_b, torch.Tensor) else torch.as_tensor(np.asarray(feats_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set for a covariance, got {len(a)} and {len(b)}")
    a, b = (x.to(device or "cpu", torch.float64) for x in (a, b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b
    cross = torch.linalg.svdvals(_gram_factor(ca) @ _gram_factor(cb).T).sum() / ((len(a) - 1) * (len(b) - 1)) ** 0.5
    trace_a, trace_b = ca.square().sum() / (len(a) - 1), cb.square().sum() / (len(b) - 1)
    fd = float((mu_a - mu_b).square().sum() + trace_a + trace_b - 2 * cross)
    return max(fd, 0.0)  # round-off can leave -1e-12 for identical sets


def _gram_factor(x: torch.Tensor) -> torch.Tensor:
    """A matrix ``F`` with ``F^T F = x^T x`` and at most min(N, D) rows: ``x`` itself, or its QR's R."""
    return torch.linalg.qr(x, mode="r").R if len(x) > x.shape[1] else x


def _as_images(images) -> torch.Tensor:
    if isinstance(images, (str, Path)):  # a folder of images or a parquet of them
        from scdpo.cost.data import image_batches

        return torch.cat(list(image_batches(images, 224, 256)))
    if isinstance(images, (list, tuple)):
        images = torch.cat([x if x.dim() == 4 else x[None] for x in images])
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
    return images


def frechet_score(images_a, images_b, backbone: str | Backbone = DEFAULT_BACKBONE,
                  device: str | torch.device = "cpu", batch_size: int = 64) -> dict:
    """Frechet distance between two image sets on a frozen backbone's pooled features.

    ``images_*``: (N, 3, H, W) tensors in [0, 1], lists of them, a folder / parquet of images, or
    the set's (N, D) features from :func:`frechet_features` (a reference computed once).
    The distance's algebra runs on the CPU, or on a CUDA backbone's GPU where a set has more samples
    than dimensions (a large reference, whose QR is then the cost: :func:`frechet_distance`).
    Returns ``{"fd", "n_a", "n_b", "backbone"}``: always quote ``n_a``/``n_b`` with ``fd``.
    """
    net = image_backbone(backbone, device) if isinstance(backbone, str) else backbone
    fa, fb = frechet_features(images_a, net, batch_size), frechet_features(images_b, net, batch_size)
    weights = next(iter(net.parameters()), None) if isinstance(net, torch.nn.Module) else None
    on_gpu = weights is not None and weights.device.type == "cuda" and max(len(fa), len(fb)) > fa.shape[1]
    fd = frechet_distance(fa, fb, weights.device if on_gpu else None)
    return {"fd": fd, "n_a": len(fa), "n_b": len(fb), "backbone": net.spec}


def frechet_features(images, backbone: Backbone, batch_size: int = 64) -> torch.Tensor:
    """The (N, D) pooled features :func:`frechet_score` compares; a 2-D tensor is taken as
    features already."""
    if isinstance(images, torch.Tensor) and images.dim() == 2:
        return images
    return backbone.features(_as_images(images), batch_size)


def torchmetrics_fid(images_a: torch.Tensor, images_b: torch.Tensor, weights_path: str | None = None,
                     batch_size: int = 64) -> dict:
    """Standard FID (``images_a`` real, ``images_b`` generated; (N, 3, H, W) in [0, 1]) through
    ``torchmetrics.image.fid.FrechetInceptionDistance`` with the FID Inception-v3 weights from
    ``weights_path`` (or ``$SCDPO_INCEPTION_WEIGHTS``). Raises ImportError when torchmetrics (and
    torch-fidelity) are not installed and FileNotFoundError when no local weights are given:
    nothing is downloaded."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        raise ImportError("standard FID needs torchmetrics and torch-fidelity "
                          "(pip install torchmetrics torch-fidelity); use frechet_score for the offline "
                          f"EfficientNet-Lite0 analogue ({e})") from None
    path = weights_path or os.environ.get(ENV_INCEPTION)
    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"FID Inception weights not found ({path or 'none given'}): pass weights_path "
                                f"or set ${ENV_INCEPTION} to a local pt_inception-2015-12-05 file")
    fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path))
    for imgs, real in ((images_a, True), (images_b, False)):
        for i in range(0, len(imgs), batch_size):
            fid.update(imgs[i:i + batch_size].float().cpu().clamp(0, 1), real=real)
    return {"fid": float(fid.compute()), "n_a": len(images_a), "n_b": len(images_b)}
