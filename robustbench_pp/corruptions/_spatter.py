"""Spatter's water drops: OpenCV's shading pipeline (Canny, distance, equalisation, emboss) in torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustbench_pp.corruptions import _ops


def _emboss(x):
    """cv2.filter2D with [[-2,-1,0],[-1,1,1],[0,1,2]] (BORDER_REFLECT_101), as shifted sums."""
    p = _ops.pad2d(x, 1, "mirror")
    h, w = x.shape[-2:]

    def px(dy, dx):
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    return 2 * (px(1, 1) - px(-1, -1)) + (px(0, 1) + px(1, 0)) - (px(-1, 0) + px(0, -1)) + px(0, 0)


def water_mask(liquid, intensity):
    """Water-drop shading: distance to the drop edges, equalised and embossed (OpenCV pipeline)."""
    liquid8 = torch.floor(liquid.clamp(0, 1) * 255)
    edge = _canny(liquid8, low=50, high=150)
    dist = _edge_distance(edge, cap=20).clamp(max=20)
    dist = torch.floor(_ops.box3(dist))
    dist = _equalize_histogram(dist)
    dist = torch.round(_emboss(dist)).clamp(0, 255)
    dist = torch.round(_ops.box3(dist))
    m = liquid8 * dist
    m = m / m.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return m * intensity


def _canny(levels, low, high):
    """OpenCV's Canny (3×3 Sobel, L1 magnitude, non-maximum suppression, hysteresis), batched."""
    p = _ops.pad2d(levels, 1, "nearest")
    h, w = levels.shape[-2:]

    def px(dy, dx):
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (px(-1, 1) - px(-1, -1)) + 2 * (px(0, 1) - px(0, -1)) + (px(1, 1) - px(1, -1))
    gy = (px(1, -1) - px(-1, -1)) + 2 * (px(1, 0) - px(-1, 0)) + (px(1, 1) - px(-1, 1))
    mag = gx.abs() + gy.abs()
    m = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside the image

    def at(dy, dx):
        return m[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    ax, ay = gx.abs(), gy.abs()
    horizontal = ay < ax * 0.4142135623730951
    vertical = ay > ax * 2.414213562373095
    same_sign = (gx < 0) == (gy < 0)
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = torch.where(same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)), (mag > at(-1, 1)) & (mag > at(1, -1)))
    maxima = (mag > low) & torch.where(horizontal, keep_h, torch.where(vertical, keep_v, keep_d))
    edge = maxima & (mag > high)
    weak = maxima & ~edge
    while bool(weak.any()):  # hysteresis: grow strong edges through 8-connected weak maxima
        e = F.pad(edge, (1, 1, 1, 1))
        near = e[..., :-2, :-2] | e[..., :-2, 1:-1] | e[..., :-2, 2:] | e[..., 1:-1, :-2]
        near = near | e[..., 1:-1, 2:] | e[..., 2:, :-2] | e[..., 2:, 1:-1] | e[..., 2:, 2:]
        reached = weak & near
        if not bool(reached.any()):
            break
        edge = edge | reached
        weak = weak & ~reached
    return edge


def _edge_distance(edge, cap):
    """Euclidean distance to the nearest edge pixel, exact up to ``cap`` (two 1-D min passes)."""
    big = float(4 * cap * cap + 1)
    sq = torch.where(edge, 0.0, big)
    h, w = edge.shape[-2:]
    col = torch.full_like(sq, big)
    rows = F.pad(sq, (0, 0, cap, cap), value=big)
    for k in range(-cap, cap + 1):
        col = torch.minimum(col, rows[..., cap + k : cap + k + h, :] + k * k)
    out = torch.full_like(sq, big)
    cols = F.pad(col, (cap, cap, 0, 0), value=big)
    for k in range(-cap, cap + 1):
        out = torch.minimum(out, cols[..., :, cap + k : cap + k + w] + k * k)
    return out.sqrt()


def _equalize_histogram(levels):
    """OpenCV's equalizeHist per image on integer levels 0..255 (N×1×H×W floats)."""
    n = levels.shape[0]
    flat = levels.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=levels.device).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    first = (hist > 0).float().argmax(dim=1, keepdim=True)
    total = flat.shape[1]
    scale = 255.0 / (total - hist.gather(1, first)).clamp_min(1)
    cumulative = hist.cumsum(dim=1) - hist.gather(1, first)
    lut = torch.round(cumulative * scale).clamp(0, 255)
    lut = torch.where(torch.arange(256, device=levels.device)[None] <= first, torch.zeros_like(lut), lut)
    return lut.gather(1, flat).reshape(levels.shape)
