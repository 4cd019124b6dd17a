"""Batched data augmentation on normalized image tensors, on whatever device they live."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dnas.errors import DnasError


@dataclass(frozen=True)
class Augment:
    """Random crop (from the zero-padded image), horizontal flip and cutout, applied in that order.

    All randomness is drawn from the CPU ``generator`` passed to :meth:`__call__`, then moved to the
    data's device, so results depend only on the generator state, never on the device.
    """

    crop_padding: int = 4  # random crop of the original size from the zero-padded image; 0 = off
    flip: bool = True  # random horizontal flip of half of the images
    cutout: int = 0  # side of one random square zeroed per image (after normalization); 0 = off

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.cutout < 0:
            raise DnasError(
                f"crop_padding and cutout must be >= 0 (got {self.crop_padding}, {self.cutout}): "
                "use 0 to turn them off."
            )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a float ``(B, C, H, W)`` batch; ``x`` itself is never modified."""
        b, c, h, w = x.shape
        device = x.device
        if self.crop_padding:
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
        if self.cutout:
            cy = torch.randint(0, h, (b,), generator=generator).to(device)
            cx = torch.randint(0, w, (b,), generator=generator).to(device)
            y0, x0 = cy - self.cutout // 2, cx - self.cutout // 2  # the square may leave the image
            ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
            in_y = (ys >= y0[:, None]) & (ys < y0[:, None] + self.cutout)
            in_x = (xs >= x0[:, None]) & (xs < x0[:, None] + self.cutout)
            x = x.masked_fill((in_y[:, :, None] & in_x[:, None, :])[:, None], 0.0)
        return x
