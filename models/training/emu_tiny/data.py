"""Reads a split written by the TypeScript world (`npm run world -- dataset`): images, image
descriptions and tokenized sequences. Python never tokenizes; the token ids come from the world."""
import json
import os
import numpy as np
import torch

CLIP_MEAN = (0.4815, 0.4578, 0.4082)
CLIP_STD = (0.2686, 0.2613, 0.2758)


class Split:
    def __init__(self, directory: str):
        self.dir = directory
        with open(os.path.join(directory, "meta.json")) as f:
            self.meta = json.load(f)
        size = self.meta["image_size"]
        self.images = np.memmap(os.path.join(directory, "images.u8"), dtype=np.uint8, mode="r").reshape(-1, size, size, 3)
        self.special = self.meta["special_ids"]
        self.tokens_per_image = self.meta["tokens_per_image"]
        self._descriptions = None

    def descriptions(self):
        if self._descriptions is None:
            with open(os.path.join(self.dir, "images.jsonl")) as f:
                self._descriptions = [json.loads(line) for line in f]
        return self._descriptions

    def examples(self, task: str):
        path = os.path.join(self.dir, f"{task}.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]


def to_unit(images_u8) -> torch.Tensor:
    """uint8 HWC batch → float [B,3,H,W] in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 255.0


def clip_normalise(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x01 - mean) / std


def encoder_targets(descriptions, grid: int = 4):
    """Per image: tokens [grid², 6] = (present, shape, colour, size, dx, dy) for the object whose
    centre lies in each token's region (offset from the region centre, in image fractions);
    scene [6] = (bg, is_mask, box×4)."""
    n = len(descriptions)
    cells = np.zeros((n, grid * grid, 6), dtype=np.float32)
    scene = np.zeros((n, 6), dtype=np.float32)
    for i, d in enumerate(descriptions):
        if "mask" in d:
            scene[i, 1] = 1.0
            scene[i, 2:] = d["mask"]
            continue
        scene[i, 0] = d["bg"]
        for o in d["objects"]:
            gx = min(grid - 1, int(o["x"] * grid))
            gy = min(grid - 1, int(o["y"] * grid))
            cx, cy = (gx + 0.5) / grid, (gy + 0.5) / grid
            cells[i, gy * grid + gx] = (1.0, o["shape"], o["color"], o["size"], o["x"] - cx, o["y"] - cy)
    return torch.from_numpy(cells), torch.from_numpy(scene)


def foreground_weight(x01: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights: saturated pixels (the shapes) count `weight` times the background."""
    mx = x01.max(1, keepdim=True).values
    mn = x01.min(1, keepdim=True).values
    sat = (mx - mn) / mx.clamp_min(1e-3)
    return 1.0 + (weight - 1.0) * ((sat > 0.3) | ((mx > 0.5) & (mn < 0.5))).float()
