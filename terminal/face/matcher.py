"""1:N matching of one descriptor against every opted-in template, vectorised.

The gallery is a float32 matrix held in memory only while face pay is on.
A match needs the nearest template under ``threshold`` and the second-nearest
shopper at least ``margin`` further away; otherwise "no match" with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The reason when the nearest two shoppers are within ``margin`` of each other: not "nobody", but "which one?"
TOO_CLOSE = "too close to call between two shoppers"


@dataclass(frozen=True)
class MatchResult:
    shopper_id: str | None
    distance: float | None
    margin: float | None
    reason: str | None

    @property
    def matched(self) -> bool:
        return self.shopper_id is not None


class Gallery:
    """Templates of opted-in shoppers: ``ids[i]`` owns row ``i`` of ``matrix``."""

    def __init__(self, ids: list[str], matrix: np.ndarray):
        matrix = np.asarray(matrix, dtype=np.float32).reshape(len(ids), -1) if ids else np.zeros((0, 128), np.float32)
        self.ids = list(ids)
        self.matrix = np.ascontiguousarray(matrix)
        self._sq = np.einsum("ij,ij->i", self.matrix, self.matrix)

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, shopper_id: str) -> "Gallery":
        keep = [i for i, s in enumerate(self.ids) if s != shopper_id]
        return Gallery([self.ids[i] for i in keep], self.matrix[keep])

    def distances(self, probe: np.ndarray) -> np.ndarray:
        probe = np.asarray(probe, dtype=np.float32)
        d2 = self._sq - 2.0 * (self.matrix @ probe) + float(probe @ probe)
        return np.sqrt(np.maximum(d2, 0.0))

    def nearest(self, probe: np.ndarray) -> tuple[str, float] | None:
        """The nearest template's shopper and distance, whatever the threshold (None for an empty gallery)."""
        if not self.ids:
            return None
        d = self.distances(probe)
        i = int(np.argmin(d))
        return self.ids[i], float(d[i])

    def match(self, probe: np.ndarray, threshold: float, margin: float) -> MatchResult:
        n = len(self.ids)
        if n == 0:
            return MatchResult(None, None, None, "nobody has opted in to face pay")
        d = self.distances(probe)
        if n == 1:
            best, second = 0, None
        else:
            two = np.argpartition(d, 1)[:2]
            best, second = (two[0], two[1]) if d[two[0]] <= d[two[1]] else (two[1], two[0])
        dist = float(d[best])
        gap = float(d[second] - d[best]) if second is not None else None
        if dist >= threshold:
            return MatchResult(None, dist, gap, "no enrolled face is close enough")
        if gap is not None and gap < margin:
            return MatchResult(None, dist, gap, TOO_CLOSE)
        return MatchResult(self.ids[best], dist, gap, None)


def false_match_in_gallery(f: float, n: int) -> float:
    """Probability that an unenrolled face matches somebody among ``n`` shoppers: 1 - (1 - f)^n."""
    return float(-np.expm1(n * np.log1p(-f))) if n > 0 else 0.0
