"""Batched data augmentation on normalized image tensors, on whatever device they live."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dnas.errors import DnasError


@dataclass(frozen=True)
class Augment:
    """Random crop, horizontal flip, colour jitter and cutout, applied in that order.

    The crop is either the CIFAR one (``crop_padding``: a crop of the original size from the
    zero-padded image) or, with ``resized_crop``, the Inception / ImageNet one: a box of area
    ``s * H * W`` with ``s ~ U(0.08, 1)`` and aspect ratio ``r`` log-uniform in ``[3/4, 4/3]``
    (the first of 10 draws that fits, else the whole image), resized back to ``H x W`` by bilinear
    sampling (no antialiasing). Colour jitter works on pixel values ``p = x * std + mean`` in
    ``[0, 1]`` (so it needs the dataset's ``mean`` and ``std``) and applies, in this fixed order,
    with factors drawn per image:

        brightness  p <- clip(f p),                          f ~ U(1 - j, 1 + j)
        contrast    p <- clip(f p + (1 - f) mean(gray(p))),  f ~ U(1 - j, 1 + j)
        saturation  p <- clip(f p + (1 - f) gray(p)),        f ~ U(1 - j, 1 + j)
        hue         h <- (h + d) mod 1 in HSV,               d ~ U(-hue, hue)

    with ``gray = 0.299 R + 0.587 G + 0.114 B`` (``j = color_jitter``; torchvision's ColorJitter, as
    in the DARTS ImageNet script, draws the order at random instead). Cutout zeroes a square after
    normalization, i.e. paints it with the mean colour.

    All randomness is drawn from the CPU ``generator`` passed to :meth:`__call__`, then moved to the
    data's device, so results depend only on the generator state, never on the device.
    """

    crop_padding: int = 4  # random crop of the original size from the zero-padded image; 0 = off
    flip: bool = True  # random horizontal flip of half of the images
    cutout: int = 0  # side of one random square zeroed per image (after normalization); 0 = off
    resized_crop: bool = False  # Inception-style random-resized crop instead of the padded crop
    color_jitter: float = 0.0  # brightness, contrast and saturation strength j (RGB only); 0 = off
    hue: float = 0.0  # hue shift range, at most 0.5 (RGB only); 0 = off

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.cutout < 0:
            raise DnasError(
                f"crop_padding and cutout must be >= 0 (got {self.crop_padding}, {self.cutout}): "
                "use 0 to turn them off."
            )
        if not (0 <= self.color_jitter < 1 and 0 <= self.hue <= 0.5):
            raise DnasError(f"color_jitter must lie in [0, 1) and hue in [0, 0.5] (got {self.color_jitter}, "
                            f"{self.hue}): use 0 to turn them off.")

    @classmethod
    def for_images(cls, image_size: int, channels: int, *, crop_padding: int | None = None,
                   flip: bool | None = None, **options: Any) -> Augment:
        """``Augment`` with the automatic choices for ``None``: crop padding ``max(1, size // 8)``
        (4 on 32x32 CIFAR) and flips for RGB images only (never for digits)."""
        return cls(crop_padding=max(1, image_size // 8) if crop_padding is None else crop_padding,
                   flip=channels == 3 if flip is None else flip, **options)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None) -> torch.Tensor:
        """Augment a float normalized ``(B, C, H, W)`` batch; ``x`` itself is never modified.

        ``mean`` and ``std`` (broadcastable to ``x``) are needed only by the colour jitter.
        """
        b, c, h, w = x.shape
        device = x.device
        if self.resized_crop:
            x = _random_resized_crop(x, generator)
        elif self.crop_padding:
            p = self.crop_padding
            dy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(device)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(device)
            padded = F.pad(x, (p, p, p, p))
            rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None].expand(b, c, h, w + 2 * p)
            x = padded.gather(2, rows)
            cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :].expand(b, c, h, w)
            x = x.gather(3, cols)
        if self.flip:
            mask = (torch.rand(b, generator=generator) < 0.5).to(device)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        if (self.color_jitter or self.hue) and c == 3:
            if mean is None or std is None:
                raise DnasError("colour jitter needs the dataset's mean and std to recover pixel values")
            pixels = (x * std + mean).clamp(0.0, 1.0)
            x = (_color_jitter(pixels, self.color_jitter, self.hue, generator) - mean) / std
        if self.cutout:
            cy = torch.randint(0, h, (b,), generator=generator).to(device)
            cx = torch.randint(0, w, (b,), generator=generator).to(device)
            y0, x0 = cy - self.cutout // 2, cx - self.cutout // 2  # the square may leave the image
            ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
            in_y = (ys >= y0[:, None]) & (ys < y0[:, None] + self.cutout)
            in_x = (xs >= x0[:, None]) & (xs < x0[:, None] + self.cutout)
            x = x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)
        return x


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def inception_boxes(b: int, h: int, w: int, generator: torch.Generator, attempts: int = 10
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x0, y0, width, height)`` (float64, whole numbers) of ``b`` Inception crop boxes in an ``h x w``
    image (see :class:`Augment`): area share ``U(0.08, 1)``, aspect ratio log-uniform in ``[3/4, 4/3]``,
    the first of ``attempts`` draws that fits, else the whole image; a uniform position."""
    area = h * w * _uniform(b * attempts, 0.08, 1.0, generator).view(b, attempts)
    ratio = torch.exp(_uniform(b * attempts, math.log(3 / 4), math.log(4 / 3), generator)).view(b, attempts)
    cw, ch = torch.sqrt(area * ratio).round(), torch.sqrt(area / ratio).round()
    fits = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    found = fits.any(1)
    first = fits.float().argmax(1)  # the first draw that fits (0 when none does: replaced below)
    pick = torch.arange(b)
    cw = torch.where(found, cw[pick, first], float(w))
    ch = torch.where(found, ch[pick, first], float(h))
    x0 = torch.floor(torch.rand(b, generator=generator, dtype=torch.float64) * (w - cw + 1))
    y0 = torch.floor(torch.rand(b, generator=generator, dtype=torch.float64) * (h - ch + 1))
    return x0, y0, cw, ch


def _random_resized_crop(x: torch.Tensor, generator: torch.Generator, attempts: int = 10) -> torch.Tensor:
    """Inception crop (see :class:`Augment`) of every image, resized back to its size."""
    b, _, h, w = x.shape
    x0, y0, cw, ch = inception_boxes(b, h, w, generator, attempts)
    # output pixel centres map into the box; grid_sample coordinates: u = 2 * pixel / size - 1
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = cw / w, (2 * x0 + cw) / w - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch / h, (2 * y0 + ch) / h - 1
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(p: torch.Tensor) -> torch.Tensor:
    return (0.299 * p[:, 0] + 0.587 * p[:, 1] + 0.114 * p[:, 2]).unsqueeze(1)


def _color_jitter(p: torch.Tensor, strength: float, hue: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of RGB pixels in ``[0, 1]`` (see :class:`Augment`)."""
    b = p.shape[0]

    def factor() -> torch.Tensor:
        return _uniform(b, 1 - strength, 1 + strength, generator).to(p).view(b, 1, 1, 1)

    if strength:
        p = (p * factor()).clamp(0, 1)
        f = factor()
        p = (f * p + (1 - f) * _gray(p).mean((2, 3), keepdim=True)).clamp(0, 1)
        f = factor()
        p = (f * p + (1 - f) * _gray(p)).clamp(0, 1)
    if hue:
        h, s, v = rgb_to_hsv(p)
        p = hsv_to_rgb(torch.remainder(h + _uniform(b, -hue, hue, generator).to(p).view(b, 1, 1), 1.0), s, v)
    return p


def rgb_to_hsv(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue, saturation and value (each in [0, 1], ``(B, H, W)``) of RGB images ``p`` ``(B, 3, H, W)`` in [0, 1]
    (the definitions of Python's ``colorsys``)."""
    r, g, bl = p.unbind(1)
    v, _ = p.max(1)
    delta = v - p.min(1).values
    s = torch.where(v > 0, delta / v.clamp(min=1e-12), torch.zeros_like(v))
    d = delta.clamp(min=1e-12)
    h = torch.where(v == r, (g - bl) / d, torch.where(v == g, 2 + (bl - r) / d, 4 + (r - g) / d))
    h = torch.where(delta > 0, torch.remainder(h / 6, 1.0), torch.zeros_like(h))
    return h, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``c_k = v - v s max(0, min(k', 4 - k', 1))``, ``k' = (k + 6h) mod 6`` for k = 5, 3, 1 (R, G, B)."""
    channels = []
    for k in (5, 3, 1):
        kk = torch.remainder(k + 6 * h, 6)
        channels.append(v - v * s * torch.clamp(torch.minimum(kk, 4 - kk), 0, 1))
    return torch.stack(channels, 1)
