"""Action tokens -> normalised bin centres -> robot units, as OpenVLA's predict_action does it.

WHY float64 numpy and this exact arithmetic order: the official outputs are float64 and a pure function of the
generated ids, so matching the formula term by term makes our actions bit-identical to theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class UnknownUnnormKeyError(KeyError):
    """The requested dataset statistics key is not in the checkpoint's norm_stats; lists the available keys."""

    def __init__(self, key: str | None, available: list[str]) -> None:
        self.key = key
        self.available = available
        what = "no unnorm_key given and the checkpoint has several" if key is None else f"unnorm_key {key!r} not found"
        super().__init__(f"{what}; available unnorm keys: {', '.join(available) or '(none)'}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ActionDecoder:
    """Maps generated action-token ids to actions with the stats of one dataset (``norm_stats[unnorm_key]``)."""

    def __init__(self, vocab_size: int, n_action_bins: int, norm_stats: Mapping[str, Any]) -> None:
        self.vocab_size = vocab_size
        self.bins = np.linspace(-1, 1, n_action_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.norm_stats = dict(norm_stats)

    @property
    def action_token_range(self) -> tuple[int, int]:
        """[first, last] token ids that encode actions (31744..31999 for openvla-7b)."""
        return self.vocab_size - len(self.bins), self.vocab_size - 1

    def resolve_key(self, unnorm_key: str | None) -> str:
        keys = sorted(self.norm_stats)
        if unnorm_key is None and len(keys) == 1:
            return keys[0]
        if unnorm_key not in self.norm_stats:
            raise UnknownUnnormKeyError(unnorm_key, keys)
        return unnorm_key

    def action_dim(self, unnorm_key: str | None) -> int:
        return len(self.norm_stats[self.resolve_key(unnorm_key)]["action"]["q01"])

    def normalized(self, token_ids: np.ndarray) -> np.ndarray:
        """Bin centres in [-1, 1]; larger id -> more negative; out-of-range ids clip to the end bins."""
        index = np.clip(self.vocab_size - np.asarray(token_ids) - 1, a_min=0, a_max=self.bin_centers.shape[0] - 1)
        return self.bin_centers[index]

    def unnormalize(self, normalized: np.ndarray, unnorm_key: str | None) -> np.ndarray:
        """q01/q99 rescaling on the dims where ``mask`` is true (all dims if the stats have no mask)."""
        stats = self.norm_stats[self.resolve_key(unnorm_key)]["action"]
        high, low = np.array(stats["q99"]), np.array(stats["q01"])
        mask = np.array(stats.get("mask", np.ones_like(low, dtype=bool)))
        return np.where(mask, 0.5 * (normalized + 1) * (high - low) + low, normalized)

    def decode(self, token_ids: np.ndarray, unnorm_key: str | None) -> np.ndarray:
        return self.unnormalize(self.normalized(token_ids), unnorm_key)
