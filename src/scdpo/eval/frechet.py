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


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a, feats_b, device: str | torch.device | None = None) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

    ``Tr((S_a S_b)^(1/2))`` is computed as ``Tr((R S_b R)^(1/2))`` with ``R = S_a^(1/2)``: the
    two matrices are similar, and the second is symmetric PSD, so ``eigh`` applies, the result is
    real by construction (no complex parts to discard, unlike ``scipy.linalg.sqrtm`` of a
    non-symmetric product) and it stays stable when the covariances are singular (N < D).

    ``device``: None computes in numpy on the CPU; a torch device computes the same float64 algebra
    with ``torch.linalg`` there: for a GPU, where the CPU's eigh of a 1280 x 1280 covariance (0.3-0.6 s
    a suite on the 2-core machine) would be among the eval's largest CPU costs. The two agree to 1e-7
    relative or better (the square roots of near-zero eigenvalues amplify round-off; tests/test_frechet.py).
    """
    a = feats_a.detach().cpu() if isinstance(feats_a, torch.Tensor) else torch.as_tensor(np.asarray(feats_a))
    b = feats_b.detach().cpu() if isinstance(feats_b, torch.Tensor) else torch.as_tensor(np.asarray(feats_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set for a covariance, got {len(a)} and {len(b)}")
    if device is not None:
        return _frechet_torch(a.to(device, torch.float64), b.to(device, torch.float64))
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    fd = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
    return max(fd, 0.0)  # round-off can leave -1e-12 for identical sets


def _frechet_torch(a: torch.Tensor, b: torch.Tensor) -> float:
    """:func:`frechet_distance`'s algebra in torch, float64, on the tensors' device."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh((cov_a + cov_a.T) / 2)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    m = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    fd = float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)
    return max(fd, 0.0)


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
    On a CUDA backbone the distance's linear algebra runs there too (:func:`frechet_distance`).
    Returns ``{"fd", "n_a", "n_b", "backbone"}``: always quote ``n_a``/``n_b`` with ``fd``.
    """
    net = image_backbone(backbone, device) if isinstance(backbone, str) else backbone
    fa, fb = frechet_features(images_a, net, batch_size), frechet_features(images_b, net, batch_size)
    weights = next(iter(net.parameters()), None) if isinstance(net, torch.nn.Module) else None
    on_gpu = weights is not None and weights.device.type == "cuda"
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
