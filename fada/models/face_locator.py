"""Face locator: where the face is, as features added to the denoising net's first feature map.

Hallo's FaceLocator (a ControlNet-style conditioning encoder): the face-region image (B, 3, H, W), 1 inside the
expanded face box, through a 3×3 conv, then per level a 3×3 conv and a stride-2 3×3 conv (SiLU after each), and a
zero-initialised 3×3 conv to the UNet's first width. Three stride-2 convs take the image to the latent grid
(H/8, W/8). The features are added to the output of the UNet's ``conv_in`` on every frame (a dropped condition
adds zeros), so the net knows where to draw the face without being told its pixels; zero-initialised, an SD1.5
init is undisturbed.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class FaceLocator(nn.Module):
    def __init__(self, out_channels: int, in_channels: int = 3, widths=(16, 32, 64, 128)):
        super().__init__()
        widths = [int(w) for w in widths]
        self.config = {"out_channels": int(out_channels), "in_channels": int(in_channels), "widths": widths}
        self.conv_in = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for a, b in zip(widths[:-1], widths[1:]):
            self.blocks.append(nn.Conv2d(a, a, kernel_size=3, padding=1))
            self.blocks.append(nn.Conv2d(a, b, kernel_size=3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(widths[-1], out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, region: Tensor) -> Tensor:
        """region (B, in_channels, H, W) -> (B, out_channels, H / 2^(levels-1), W / 2^(levels-1))."""
        x = F.silu(self.conv_in(region))
        for conv in self.blocks:
            x = F.silu(conv(x))
        return self.conv_out(x)
