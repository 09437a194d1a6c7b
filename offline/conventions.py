"""OpenVLA's ``bridge_orig`` ground-truth conventions, on plain arrays.

OpenVLA-7B was trained on BridgeData v2 after this transform, so ground truth compared with its predictions must
go through it too: drop the first step (its action is all zeros), binarise the gripper (> 0.95 open, < 0.05
closed, in-between values take the next stable value), and relabel the movement deltas from the state
(state[t+1, :6] - state[t, :6]), which drops the last step. Written from the description in the OpenVLA notes.
"""

from __future__ import annotations

import numpy as np

OPEN_ABOVE, CLOSED_BELOW = 0.95, 0.05
MIN_STEPS = 3  # the transform drops the first and the last step; fewer would leave an empty episode


def binarize_gripper(gripper: np.ndarray) -> np.ndarray:
    """1 = open, 0 = closed; a value in between takes the next stable step's binarised value. When nothing stable
    follows (the episode ends mid-transition) OpenVLA gives up and keeps the last raw value, so we do too."""
    values = np.asarray(gripper, dtype=np.float32)
    out = np.empty_like(values)
    carry = values[-1] if len(values) else np.float32(0)
    for t in range(len(values) - 1, -1, -1):
        if values[t] > OPEN_ABOVE or values[t] < CLOSED_BELOW:
            carry = np.float32(values[t] > OPEN_ABOVE)
        out[t] = carry
    return out


def apply_bridge_orig(states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (kept step indices, states, actions) after the transform; T steps in, T - 2 out.

    Raises ValueError for T < 3: an episode with no frame left must be reported, not written as an empty bag.
    """
    if len(states) < MIN_STEPS:
        raise ValueError(f"episode has {len(states)} step(s); the bridge_orig conventions need at least {MIN_STEPS} "
                         "(they drop the first and the last step)")
    states = np.asarray(states, dtype=np.float32)[1:]
    actions = np.asarray(actions, dtype=np.float32)[1:]
    gripper = binarize_gripper(actions[:, 6])
    relabelled = np.concatenate([states[1:, :6] - states[:-1, :6], gripper[:-1, None]], axis=1).astype(np.float32)
    kept = np.arange(1, len(states))
    return kept, states[:-1], relabelled
