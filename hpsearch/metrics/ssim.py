"""SSIM (Wang et al. 2004) for small grayscale images such as the 8x8 scikit-learn digits."""

from __future__ import annotations

import torch
from torch.nn import functional


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """A normalized 2-D Gaussian window ``[1, 1, size, size]``."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-(coords**2) / (2 * sigma**2))
    window = torch.outer(line, line)
    return (window / window.sum()).reshape(1, 1, size, size)


def ssim(
    images: torch.Tensor,
    references: torch.Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 5,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Mean SSIM of each image against its reference, shape ``[N]``.

    ``images`` and ``references`` are ``[N, H, W]`` (or ``[N, 1, H, W]``) with values in
    ``[0, data_range]``. Local statistics use a Gaussian window (``window_size`` x
    ``window_size``, valid positions only: a 4x4 map on 8x8 images with the defaults) and the
    usual constants ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``. Identical images score 1.
    """
    if images.shape != references.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(images.shape)} vs {tuple(references.shape)}")
    x = _as_batch(images)
    y = _as_batch(references)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"ssim: images {tuple(x.shape[-2:])} are smaller than the window")
    window = gaussian_window(window_size, sigma).to(x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = functional.conv2d(x, window), functional.conv2d(y, window)
    var_x = functional.conv2d(x * x, window) - mu_x**2
    var_y = functional.conv2d(y * y, window) - mu_y**2
    cov = functional.conv2d(x * y, window) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(dim=1).to(images.dtype)


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` float64 from ``[N, H, W]`` or ``[N, 1, H, W]``."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"ssim: expected [N, H, W] or [N, 1, H, W], got {tuple(images.shape)}")
    return images.detach().to(torch.float64)


__all__ = ["gaussian_window", "ssim"]
