"""Denoising the final image with Intel Open Image Denoise (PyPI ``pyoidn``).

The root reducer calls this on the mean of all passes, never on a partial: the passes'
colour, albedo and normal are averaged like any sample (the albedo and normal of a few
samples are noisy too, so OIDN prefilters them: ``clean_aux`` off). Colour is HDR linear.
"""

from __future__ import annotations

import numpy as np


def denoise(rgba: np.ndarray, albedo: np.ndarray, normal: np.ndarray) -> np.ndarray:
    import pyoidn

    color = np.ascontiguousarray(np.maximum(rgba[:, :, :3], 0.0), np.float32)
    out = pyoidn.denoise(color, np.ascontiguousarray(np.clip(albedo, 0.0, 1.0), np.float32),
                         np.ascontiguousarray(np.clip(normal, -1.0, 1.0), np.float32),
                         hdr=True, clean_aux=False, quality="high")
    return np.concatenate([np.asarray(out, np.float32), rgba[:, :, 3:4]], axis=2)
