"""Synthetic tabletop episodes: a planned pick-and-place, the robot state it produces, and the camera images.

Pure numpy + OpenCV (no TensorFlow), so the scene logic can be tested and reused without the slow TF import.
The geometry follows BridgeData v2's WidowX conventions: state = [x, y, z, roll, pitch, yaw, gripper] in metres and
radians with gripper 1 = open, 0 = closed; action = [dx, dy, dz, droll, dpitch, dyaw, gripper (absolute)] at 5 Hz;
the first action of an episode is all zeros (the quirk OpenVLA's bridge_orig transform drops).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import cv2
import numpy as np

IMAGE_SIZE = 256
COLOURS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (210, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 210),
    "yellow": (230, 200, 40),
    "orange": (240, 130, 30),
    "purple": (140, 60, 170),
}
# (movable object kind, receptacle kind, instruction template)
TASK_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("block", "plate", "put the {a} block on the {b} plate"),
    ("block", "bowl", "put the {a} block in the {b} bowl"),
    ("block", "plate", "move the {a} block onto the {b} plate"),
)
WORKSPACE_X = (0.20, 0.40)  # metres, forward from the robot base
WORKSPACE_Y = (-0.12, 0.12)  # metres, left of the robot base
HOVER_Z, GRASP_Z, PLACE_Z = 0.10, 0.02, 0.05
OBJECT_HALF_SIZE = {"block": 0.018, "plate": 0.040, "bowl": 0.035}
GRIPPER_SEGMENTS = {2: 3, 6: 2}  # plan segment index -> steps (gripper closing / opening take a few steps)
TRACKING_NOISE_M = 0.0008  # the real arm does not reach commanded poses exactly; relabelled deltas differ slightly


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object lying on the table."""

    kind: str  # block | plate | bowl
    colour: str
    x: float
    y: float
    yaw: float

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclasses.dataclass
class Episode:
    """One rendered episode, as plain arrays (what the TFDS builder writes)."""

    instruction: str
    objects: list[SceneObject]
    states: np.ndarray  # (T, 7) float32
    actions: np.ndarray  # (T, 7) float32
    images: dict[str, list[np.ndarray]]  # camera name -> T RGB uint8 images; absent cameras are not in the dict


class _NoRoom(Exception):
    """The objects drawn for a scene do not fit on the table without overlapping."""


def _pick_objects(rng: np.random.Generator) -> tuple[str, list[SceneObject], SceneObject, SceneObject]:
    """A task and its objects; a draw that does not fit is drawn again (from the same generator, so an episode
    stays a function of its seed and index)."""
    for _ in range(1000):
        try:
            return _draw_objects_once(rng)
        except _NoRoom:
            continue
    raise RuntimeError("could not place the objects of a scene without overlap in 1000 draws")


def _draw_objects_once(rng: np.random.Generator) -> tuple[str, list[SceneObject], SceneObject, SceneObject]:
    kind_a, kind_b, template = TASK_TEMPLATES[rng.integers(len(TASK_TEMPLATES))]
    colours = list(rng.permutation(list(COLOURS)))
    placed: list[tuple[float, float, float]] = []

    def free_spot(radius: float) -> tuple[float, float]:
        for _ in range(200):
            x, y = rng.uniform(*WORKSPACE_X), rng.uniform(*WORKSPACE_Y)
            if all(np.hypot(x - px, y - py) > radius + pr + 0.02 for px, py, pr in placed):
                placed.append((x, y, radius))
                return float(x), float(y)
        raise _NoRoom

    def make(kind: str, colour: str) -> SceneObject:
        x, y = free_spot(OBJECT_HALF_SIZE[kind] * 1.5)
        return SceneObject(kind, colour, x, y, float(rng.uniform(-0.6, 0.6)))

    target = make(kind_b, colours[1])
    movable = make(kind_a, colours[0])
    distractors = [make(str(rng.choice(["block", "plate"])), colours[2 + i]) for i in range(int(rng.integers(0, 3)))]
    instruction = template.format(a=movable.colour, b=target.colour)
    return instruction, [target, *distractors, movable], movable, target


def _apportion(total: int, weights: list[float]) -> list[int]:
    """``total`` steps split over segments in proportion to ``weights``, at least one each, summing to ``total``
    exactly (largest remainders get the leftover steps): rounding each share alone missed the asked length."""
    shares = [(total - len(weights)) * w / sum(weights) for w in weights]
    counts = [1 + int(share) for share in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: int(shares[i]) - shares[i])
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def _plan(rng: np.random.Generator, movable: SceneObject, target: SceneObject, n_steps: int) -> np.ndarray:
    """Commanded poses (n_steps, 7): reach, descend, close, lift, carry, lower, open, retreat."""
    start = np.array([rng.uniform(0.22, 0.30), rng.uniform(-0.05, 0.05), 0.12, 0.0, 0.0, 0.0, 1.0])
    above_a = np.array([movable.x, movable.y, HOVER_Z, 0.0, 0.0, movable.yaw, 1.0])
    at_a = above_a.copy(); at_a[2] = GRASP_Z
    closed_a = at_a.copy(); closed_a[6] = 0.0
    lifted = closed_a.copy(); lifted[2] = HOVER_Z
    above_b = np.array([target.x, target.y, HOVER_Z, 0.0, 0.0, target.yaw * 0.5, 0.0])
    at_b = above_b.copy(); at_b[2] = PLACE_Z
    open_b = at_b.copy(); open_b[6] = 1.0
    retreat = open_b.copy(); retreat[2] = HOVER_Z + 0.02
    waypoints = [start, above_a, at_a, closed_a, lifted, above_b, at_b, open_b, retreat]
    lengths = [float(np.linalg.norm(b[:3] - a[:3])) + 1e-3 for a, b in zip(waypoints, waypoints[1:])]
    moving = [i for i in range(len(lengths)) if i not in GRIPPER_SEGMENTS]
    shortest = 2 + sum(GRIPPER_SEGMENTS.values()) + len(moving)
    if n_steps < shortest:
        raise ValueError(f"a pick-and-place episode needs at least {shortest} steps, asked for {n_steps}")
    budget = n_steps - 2 - sum(GRIPPER_SEGMENTS.values())
    counts = dict(zip(moving, _apportion(budget, [lengths[i] for i in moving]))) | GRIPPER_SEGMENTS
    poses = [start, start]  # the first step does not move: its action is all zeros, as in BridgeData
    for i, (a, b) in enumerate(zip(waypoints, waypoints[1:])):
        for k in range(1, counts[i] + 1):
            poses.append(a + (b - a) * k / counts[i])
    return np.asarray(poses, dtype=np.float64)


def _execute(rng: np.random.Generator, commanded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Actions from the plan and the states the arm reaches (small tracking error, gripper lag)."""
    n = len(commanded)
    actions = np.zeros((n, 7))
    actions[:-1, :6] = commanded[1:, :6] - commanded[:-1, :6]
    actions[:-1, 6] = commanded[1:, 6]
    actions[-1, 6] = commanded[-1, 6]
    actions[0] = 0.0
    for t in range(1, n):  # an intermediate command makes the gripper signal non-binary, as on the real robot
        if commanded[t, 6] != commanded[t - 1, 6] and t + 1 < n:
            actions[t - 1, 6] = 0.5 * (commanded[t - 1, 6] + commanded[t, 6]) if t >= 2 else actions[t - 1, 6]
    states = np.zeros((n, 7))
    states[0] = commanded[0]
    for t in range(1, n):
        states[t, :6] = states[t - 1, :6] + actions[t - 1, :6]
        states[t, :3] += rng.normal(0.0, TRACKING_NOISE_M, 3) * (np.abs(actions[t - 1, :3]).sum() > 0)
        states[t, 6] = 0.4 * states[t - 1, 6] + 0.6 * (actions[t - 1, 6] if t > 1 else states[0, 6])
    return states.astype(np.float32), actions.astype(np.float32)


# --- rendering -------------------------------------------------------------------------------------------------

Projector = Callable[[np.ndarray], np.ndarray]  # (N, 3) world points -> (N, 2) pixel coordinates


def _main_camera(p: np.ndarray) -> np.ndarray:
    """Fixed oblique camera in front of the robot (BridgeData's image_0)."""
    u = 128 - p[:, 1] / 0.14 * 105
    v = 215 - (p[:, 0] - 0.18) / 0.24 * 150 - p[:, 2] * 420
    return np.stack([u, v], axis=1)


def _side_camera(p: np.ndarray) -> np.ndarray:
    """A second fixed camera looking from the robot's left (image_1)."""
    u = 30 + (p[:, 0] - 0.18) / 0.24 * 200
    v = 200 - (p[:, 1] + 0.14) / 0.28 * 120 - p[:, 2] * 380
    return np.stack([u, v], axis=1)


def _wrist_camera(gripper: np.ndarray) -> Projector:
    """Camera on the gripper looking down (image_3): zoom grows as the gripper descends."""
    scale = 1400.0 / max(gripper[2] + 0.06, 0.03)
    c, s = np.cos(-gripper[5]), np.sin(-gripper[5])

    def project(p: np.ndarray) -> np.ndarray:
        dx, dy = p[:, 0] - gripper[0], p[:, 1] - gripper[1]
        rx, ry = c * dx - s * dy, s * dx + c * dy
        return np.stack([128 - ry * scale / 10, 110 - rx * scale / 10], axis=1)

    return project


def _footprint(obj: SceneObject, z: float = 0.0) -> np.ndarray:
    half = OBJECT_HALF_SIZE[obj.kind]
    if obj.kind == "block":
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * half
    else:
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        corners = np.stack([np.cos(angles), np.sin(angles)], axis=1) * half
    c, s = np.cos(obj.yaw), np.sin(obj.yaw)
    xy = corners @ np.array([[c, s], [-s, c]]) + [obj.x, obj.y]
    return np.column_stack([xy, np.full(len(xy), z)])


def _poly(img: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int]) -> None:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=4)


def _background(seed_key: str) -> np.ndarray:
    """Wood-like table and a wall band, fixed per episode so frames differ only where things move."""
    rng = np.random.default_rng(int(hashlib.sha256(seed_key.encode()).hexdigest()[:8], 16))
    img = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    rows = np.linspace(0, 1, IMAGE_SIZE)[:, None]
    grain = 0.5 + 0.5 * np.sin(np.arange(IMAGE_SIZE)[None, :] / rng.uniform(3, 7) + rows * rng.uniform(5, 20))
    img[...] = np.array([170, 125, 80]) * (0.85 + 0.15 * grain)[..., None]
    img[:40] = np.array([200, 200, 190])
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_gripper(img: np.ndarray, project: Projector, state: np.ndarray) -> None:
    x, y, z, yaw, opening = state[0], state[1], state[2], state[5], float(np.clip(state[6], 0, 1))
    shadow = project(np.array([[x, y, 0.0]]))[0]
    cv2.ellipse(img, (int(shadow[0]), int(shadow[1])), (12, 5), 0, 0, 360, (90, 70, 50), -1, cv2.LINE_AA)
    c, s = np.cos(yaw), np.sin(yaw)
    across = np.array([-s, c])  # finger separation direction in the table plane
    half_gap = 0.008 + 0.022 * opening
    for sign in (-1, 1):
        fx, fy = np.array([x, y]) + sign * half_gap * across
        finger = np.array([[fx, fy, z], [fx, fy, z + 0.05]])
        a, b = project(finger)
        cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), (60, 60, 65), 5, cv2.LINE_AA)
    wrist = project(np.array([[x, y, z + 0.05], [x, y, z + 0.12]]))
    cv2.line(img, tuple(int(v) for v in wrist[0]), tuple(int(v) for v in wrist[1]), (35, 35, 40), 9, cv2.LINE_AA)


def _draw_objects(img: np.ndarray, project: Projector, objects: list[SceneObject], held: SceneObject | None,
                  held_z: float) -> None:
    for obj in objects:
        colour = COLOURS[obj.colour]
        if obj.kind == "block":
            z = held_z if obj is held else 0.0
            top = project(_footprint(obj, z + 0.03))
            _poly(img, project(_footprint(obj, z)), tuple(int(c * 0.6) for c in colour))
            _poly(img, top, colour)
        else:
            _poly(img, project(_footprint(obj, 0.0)), tuple(int(c * 0.75) for c in colour))
            if obj.kind == "bowl":
                pts = project(_footprint(obj, 0.0))
                centre = pts.mean(axis=0)
                _poly(img, centre + (pts - centre) * 0.7, tuple(int(c * 0.45) for c in colour))


def render_episode(seed: int, episode_index: int, n_steps: int, cameras: tuple[str, ...]) -> Episode:
    """Plan, execute and render one episode deterministically from (seed, episode_index)."""
    rng = np.random.default_rng([seed, episode_index])
    instruction, objects, movable, target = _pick_objects(rng)
    commanded = _plan(rng, movable, target, n_steps)
    states, actions = _execute(rng, commanded)
    backgrounds = {cam: _background(f"{seed}/{episode_index}/{cam}") for cam in cameras}
    images: dict[str, list[np.ndarray]] = {cam: [] for cam in cameras}
    held, grasp_offset = None, np.zeros(2)
    for state in states:
        movable = objects[-1]
        if held is None and state[6] < 0.5 and state[2] < GRASP_Z + 0.01 \
                and np.hypot(state[0] - movable.x, state[1] - movable.y) < 0.02:
            held, grasp_offset = movable, np.array([movable.x - state[0], movable.y - state[1]])
        if held is not None:  # carried along; stays where it is when the gripper opens
            objects[-1] = held = dataclasses.replace(held, x=float(state[0] + grasp_offset[0]),
                                                     y=float(state[1] + grasp_offset[1]))
            if state[6] > 0.5:
                held = None
        held_z = max(float(state[2]) - 0.015, 0.0)
        for cam in cameras:
            img = backgrounds[cam].copy()
            project = {"image_0": _main_camera, "image_1": _side_camera}.get(cam) or _wrist_camera(state)
            _draw_objects(img, project, objects, held, held_z)
            if cam != "image_3":
                _draw_gripper(img, project, state)
            else:
                gap = int(20 + 60 * float(np.clip(state[6], 0, 1)))
                for sign in (-1, 1):
                    cv2.rectangle(img, (128 + sign * gap - 6, 200), (128 + sign * gap + 6, 255), (60, 60, 65), -1)
            images[cam].append(img)
    return Episode(instruction, objects, states, actions, images)


def instruction_embedding(instruction: str, dim: int = 512) -> np.ndarray:
    """A deterministic unit vector per instruction, standing in for BridgeData's Universal Sentence Encoder
    embedding (same shape and dtype; no semantics: nothing in this project reads it as meaning)."""
    seed = int(hashlib.sha256(instruction.encode()).hexdigest()[:16], 16)
    vec = np.random.default_rng(seed).normal(size=dim)
    return (vec / np.linalg.norm(vec)).astype(np.float32)
