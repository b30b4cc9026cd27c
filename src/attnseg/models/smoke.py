"""A tiny end-to-end run of the model: proves install, forward, backward and optimizer on any CPU."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from attnseg.models.unet import AttentionUNet


def sphere_batch(size: int, generator: torch.Generator, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy volumes with one bright sphere each, and their labels (0/1)."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    images, labels = [], []
    for _ in range(batch):
        centre = size * (0.3 + 0.4 * torch.rand(3, 1, 1, 1, generator=generator))
        radius = size * (0.1 + 0.15 * torch.rand(1, generator=generator))
        mask = ((grid - centre) ** 2).sum(0).sqrt() < radius
        image = mask.float() + 0.3 * torch.randn(mask.shape, generator=generator)
        images.append(image[None])
        labels.append(mask.long())
    return torch.stack(images), torch.stack(labels)


def smoke_run(steps: int = 30, size: int = 32, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = AttentionUNet(3, 1, 2, features=(8, 16, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    losses = []
    for _ in range(steps):
        x, y = sphere_batch(size, generator)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    x, y = sphere_batch(size, generator)
    with torch.no_grad():
        pred = model(x).argmax(1)
    inter = ((pred == 1) & (y == 1)).sum().item()
    dice = 2 * inter / max((pred == 1).sum().item() + (y == 1).sum().item(), 1)
    return {
        "steps": steps,
        "first_loss": losses[0],
        "last_loss": sum(losses[-5:]) / len(losses[-5:]),
        "dice": dice,
        "seconds": time.perf_counter() - start,
    }
