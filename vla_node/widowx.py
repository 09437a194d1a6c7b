"""WidowX 250 per-step action bounds of BridgeData v2's robot stack, and clipping a policy action to them.

WHY clip in the node: the real robot stack (bridge_data_robot widowx_envs) clips each step to these bounds before
moving, so an unclipped action would promise motion the arm never makes; clipping here makes what we publish (and
record in replay) what the robot would execute, while ``raw`` keeps the policy's own output for analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_DELTA_XYZ_M = 0.05
MAX_DELTA_RPY_RAD = 0.25
GRIPPER_RANGE = (0.0, 1.0)  # absolute: 0 closed .. 1 open

LOW = np.array([-MAX_DELTA_XYZ_M] * 3 + [-MAX_DELTA_RPY_RAD] * 3 + [GRIPPER_RANGE[0]])
HIGH = np.array([MAX_DELTA_XYZ_M] * 3 + [MAX_DELTA_RPY_RAD] * 3 + [GRIPPER_RANGE[1]])


@dataclass(frozen=True)
class ClippedAction:
    raw: np.ndarray  # (7,) float64, the policy's action
    action: np.ndarray  # (7,) float64, inside the bounds
    clipped: bool


def clip_to_widowx(raw: Sequence[float]) -> ClippedAction:
    """[dx, dy, dz, droll, dpitch, dyaw, gripper] -> the same clipped to the WidowX bounds (NaN is an error)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape != (7,):
        raise ValueError(f"a WidowX action has 7 components, got shape {raw.shape}")
    if not np.all(np.isfinite(raw)):
        raise ValueError(f"non-finite action {raw.tolist()}")
    action = np.clip(raw, LOW, HIGH)
    return ClippedAction(raw, action, bool(np.any(action != raw)))
