"""Pair lists for message-passing models of a fixed region (TorchScript functions).

A region has a fixed list of atoms, so every ordered pair is a candidate edge; a model keeps the pairs it needs
on each call. Edges follow the convention of MACE and so3krates-torch: ``edge_index[0]`` sends, ``edge_index[1]``
receives, and the edge vector is ``positions[receiver] - positions[sender] + shift``.
"""

from typing import Optional

import torch
from torch import Tensor


def all_pairs(n: int) -> Tensor:
    """[2, n (n - 1)] every ordered pair (sender, receiver) of n atoms, sorted by receiver."""
    receiver, sender = torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')
    off_diagonal = receiver != sender
    return torch.stack([sender[off_diagonal], receiver[off_diagonal]])


def minimum_image_shifts(vectors: Tensor, box: Tensor) -> Tensor:
    """Shifts (no gradient) that take pair vectors [..., 3] to their minimum image in an OpenMM box (reduced
    triclinic form, rows a, b, c) in the same unit."""
    vectors = vectors.detach()
    box = box.to(vectors.dtype)
    shifted = vectors - torch.round(vectors[..., 2:3] / box[2, 2]) * box[2]
    shifted = shifted - torch.round(shifted[..., 1:2] / box[1, 1]) * box[1]
    shifted = shifted - torch.round(shifted[..., 0:1] / box[0, 0]) * box[0]
    return shifted - vectors


def minimum_image_vectors(positions: Tensor, pair_index: Tensor, box: Optional[Tensor]):
    """Edge vectors (no gradient) and the shifts that make them minimum-image, for positions and an OpenMM box
    (reduced triclinic form, rows a, b, c) in the same unit; zero shifts without a box."""
    vectors = (positions[pair_index[1]] - positions[pair_index[0]]).detach()
    if box is None:
        return vectors, torch.zeros_like(vectors)
    shifts = minimum_image_shifts(vectors, box)
    return vectors + shifts, shifts


def check_box_widths(box: Optional[Tensor], min_width: float, message: str):
    """Raise ``message`` when a width of the box (same unit as min_width) is below min_width."""
    if box is not None:
        widths = torch.stack([box[0, 0], box[1, 1], box[2, 2]])
        if bool(torch.any(widths < min_width)):
            raise ValueError(message)
