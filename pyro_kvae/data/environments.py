# SPDX-License-Identifier: Apache-2.0
"""
Simulated physical environments of the paper's experiments (section 5).

Every environment is a dataclass whose fields are its settings (defaults from
the paper and the authors' reference code) and whose ``simulate(rng)`` returns
the true state of one sequence as a dict of float arrays with time first:
``position (T, 2)``, ``velocity (T, 2)``, ``u (T, dim_u)`` and, for the
pendulum, ``angle (T,)`` and ``angular_velocity (T,)``. ``render(states)``
turns a batch of states into binary frames ``(N, T, H, W)`` (uint8 0/1) with
numpy, no display needed.

Coordinates are in pixels with the origin at the bottom-left corner of the
frame and ``y`` pointing up; image row 0 is the top of the frame.

Ball environments use pymunk (as the reference does) for elastic collisions.
The pendulum has no contacts and integrates its ODE with RK4, which conserves
energy far better than a joint-constraint solver.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import pymunk

States = Dict[str, np.ndarray]


def render_discs(centres: np.ndarray, radius: float, size: int) -> np.ndarray:
    """
    Binary images of discs.

    :param np.ndarray centres: ``(..., 2)`` disc centres ``(x, y)`` in pixels.
    :param float radius: disc radius in pixels.
    :param int size: frame height and width.
    :returns: ``uint8`` array ``(..., size, size)``, 1 where a pixel centre lies in the disc.
    """
    grid = np.arange(size) + 0.5
    x = centres[..., 0, None, None]
    y = centres[..., 1, None, None]
    dx = grid[None, :] - x  # columns
    dy = (size - grid)[:, None] - y  # rows, y up
    return (dx * dx + dy * dy <= radius * radius).astype(np.uint8)


def _in_convex_polygon(point, vertices) -> bool:
    """True when ``point`` lies strictly inside the counter-clockwise convex polygon."""
    px, py = point
    for (x0, y0), (x1, y1) in zip(vertices, vertices[1:] + vertices[:1]):
        if (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0) <= 0:
            return False
    return True


def _distance_to_segments(point, vertices) -> float:
    p = np.asarray(point, dtype=float)
    best = math.inf
    for a, b in zip(vertices, vertices[1:] + vertices[:1]):
        a, b = np.asarray(a, float), np.asarray(b, float)
        t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0.0, 1.0)
        best = min(best, float(np.linalg.norm(p - (a + t * (b - a)))))
    return best


@dataclass
class BallEnvironment:
    """
    A ball bouncing elastically inside walls (the paper's bouncing-ball box).

    The ball starts at the centre plus ``N(0, init_std^2)`` per axis (clipped to
    stay inside), with speed ``U(speed_min, speed_max)`` and a uniform angle.
    """

    size: int = 32
    T: int = 20
    dt: float = 0.2
    radius: float = 3.0
    inset: float = 2.0
    init_std: float = 10.0
    speed_min: float = 10.0
    speed_max: float = 15.0
    gravity: float = 0.0
    substeps: int = 10

    dim_u = 0

    def walls(self) -> List[Tuple[float, float]]:
        """Counter-clockwise wall vertices ``[(x, y), ...]`` in pixels."""
        lo, hi = self.inset, self.size - self.inset
        return [(lo, lo), (hi, lo), (hi, hi), (lo, hi)]

    def _initial_position(self, rng) -> np.ndarray:
        walls = self.walls()
        centre = np.full(2, self.size / 2)
        for _ in range(1000):
            pos = centre + self.init_std * rng.standard_normal(2)
            lo = np.min(walls, axis=0) + self.radius + 0.5
            hi = np.max(walls, axis=0) - self.radius - 0.5
            pos = np.clip(pos, lo, hi)
            if _in_convex_polygon(pos, walls) and _distance_to_segments(pos, walls) > self.radius + 0.5:
                return pos
        raise RuntimeError("could not place the ball inside the walls")

    def _build(self, rng) -> Tuple[pymunk.Space, pymunk.Body]:
        space = pymunk.Space()
        space.gravity = (0.0, -self.gravity)
        body = pymunk.Body(1.0, pymunk.moment_for_circle(1.0, 0, self.radius))
        body.position = tuple(self._initial_position(rng))
        speed = rng.uniform(self.speed_min, self.speed_max)
        angle = rng.uniform(0, 2 * math.pi)
        body.velocity = (speed * math.cos(angle), speed * math.sin(angle))
        ball = pymunk.Circle(body, self.radius)
        ball.elasticity, ball.friction = 1.0, 0.0
        space.add(body, ball)
        walls = self.walls()
        for p, q in zip(walls, walls[1:] + walls[:1]):
            seg = pymunk.Segment(space.static_body, p, q, 0.0)
            seg.elasticity, seg.friction = 1.0, 0.0
            space.add(seg)
        return space, body

    def simulate(self, rng: np.random.Generator) -> States:
        """One sequence of states drawn with ``rng`` (dict of arrays ``(T, ...)``)."""
        space, body = self._build(rng)
        pos = np.empty((self.T, 2))
        vel = np.empty((self.T, 2))
        h = self.dt / self.substeps
        for t in range(self.T):
            pos[t], vel[t] = body.position, body.velocity
            for _ in range(self.substeps):
                space.step(h)
        return {"position": pos, "velocity": vel, "u": np.zeros((self.T, 0))}

    def render(self, states: States) -> np.ndarray:
        """Frames ``(N, T, size, size)`` from ``states["position"] (N, T, 2)``."""
        return render_discs(states["position"], self.radius, self.size)


@dataclass
class GravityEnvironment(BallEnvironment):
    """The bouncing-ball box with constant gravity pulling the ball down (``-y``); the
    authors' settings: gravity 5 px/s^2, start at the centre + N(0, 8^2), speed U(5, 10)."""

    gravity: float = 5.0
    init_std: float = 8.0
    speed_min: float = 5.0
    speed_max: float = 10.0


@dataclass
class PolygonEnvironment(BallEnvironment):
    """A ball bouncing inside the authors' irregular convex hexagon, starting at the
    centre + N(0, 2.5^2)."""

    init_std: float = 2.5
    vertices: List[Tuple[float, float]] = field(
        default_factory=lambda: [(15.0, 1.0), (30.0, 8.0), (25.0, 30.0), (8.0, 30.0), (1.0, 15.0), (3.0, 1.0)]
    )

    def walls(self):
        """The walls as polygon vertices ``[(x, y), ...]`` in pixels."""
        return list(self.vertices)


@dataclass
class PongEnvironment(BallEnvironment):
    """
    The authors' pong: a floor at ``y = floor`` and a roof at ``y = roof`` (no side walls),
    and two paddles, vertical segments ``paddle_length`` pixels long at ``x = paddle_x``,
    elasticity ``paddle_elasticity``. Each frame a paddle moves at most ``paddle_speed``
    pixels towards the ball's height, so it can miss the ball, which then leaves the frame.
    States add ``paddles (T, 2)``: the paddles' centre heights. Frames show the ball and the
    paddles (1-pixel columns).
    """

    init_std: float = 3.0
    floor: float = 1.0
    roof: float = 32.0
    paddle_x: Tuple[float, float] = (0.0, 30.0)
    paddle_length: float = 6.0
    paddle_speed: float = 2.0  # pixels per frame
    paddle_elasticity: float = 0.99

    def walls(self):  # where the ball may start
        """The walls as polygon vertices ``[(x, y), ...]`` in pixels."""
        return [(0.0, self.floor), (float(self.size), self.floor), (float(self.size), self.roof), (0.0, self.roof)]

    def _build(self, rng):
        space = pymunk.Space()
        body = pymunk.Body(1.0, pymunk.moment_for_circle(1.0, 0, self.radius))
        body.position = tuple(self._initial_position(rng))
        speed, angle = rng.uniform(self.speed_min, self.speed_max), rng.uniform(0, 2 * math.pi)
        body.velocity = (speed * math.cos(angle), speed * math.sin(angle))
        ball = pymunk.Circle(body, self.radius)
        ball.elasticity, ball.friction = 1.0, 0.0
        space.add(body, ball)
        far = 10.0 * self.size  # the floor and roof run on beyond the frame
        for y in (self.floor, self.roof):
            seg = pymunk.Segment(space.static_body, (-far, y), (far, y), 0.0)
            seg.elasticity, seg.friction = 1.0, 0.0
            space.add(seg)
        for x in self.paddle_x:
            paddle = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
            paddle.position = (x, body.position.y)
            half = self.paddle_length / 2
            seg = pymunk.Segment(paddle, (0.0, -half), (0.0, half), 0.0)
            seg.elasticity, seg.friction = self.paddle_elasticity, 0.0
            space.add(paddle, seg)
        return space, body

    def simulate(self, rng):
        """One sequence of states drawn with ``rng`` (dict of arrays ``(T, ...)``)."""
        space, body = self._build(rng)
        bats = sorted((b for b in space.bodies if b.body_type == pymunk.Body.KINEMATIC), key=lambda b: b.position.x)
        pos, vel, paddles = np.empty((self.T, 2)), np.empty((self.T, 2)), np.empty((self.T, 2))
        h = self.dt / self.substeps
        for t in range(self.T):
            pos[t], vel[t] = body.position, body.velocity
            paddles[t] = [p.position.y for p in bats]
            for p in bats:  # towards the ball's height, at most paddle_speed in this frame
                p.velocity = (0.0, float(np.clip(body.position.y - p.position.y, -self.paddle_speed,
                                                  self.paddle_speed)) / self.dt)  # fmt: skip
            for _ in range(self.substeps):
                space.step(h)
        return {"position": pos, "velocity": vel, "paddles": paddles, "u": np.zeros((self.T, 0))}

    def render(self, states):
        """Frames ``(n, T, size, size)`` uint8 of the stacked ``states``."""
        frames = super().render(states)
        rows = self.size - (np.arange(self.size) + 0.5)  # y of each image row
        for k, x in enumerate(self.paddle_x):
            y = states["paddles"][..., k, None]  # (N, T, 1)
            lit = (np.abs(rows - y) <= self.paddle_length / 2).astype(np.uint8)  # (N, T, size)
            frames[..., min(int(x), self.size - 1)] |= lit
        return frames


@dataclass
class PendulumEnvironment:
    """
    A torque-controlled pendulum (the DVBF experiment): 16x16 frames, T=15.

    ``theta'' = -(g / l) sin(theta) - damping theta' + u / (m l^2)``, with a
    random torque ``u_t ~ U(-max_torque, max_torque)`` held between frames
    ``t-1`` and ``t`` and recorded as the control ``u[t]`` (``u[0] = 0``, as
    slot 0 of the KVAE's ``B_t u_t`` is unused). ``theta = 0`` hangs straight down.
    Frames show the bob as a disc and the rod as a line of dots.
    """

    size: int = 16
    T: int = 15
    dt: float = 0.1
    g: float = 9.81
    length: float = 1.0
    mass: float = 1.0
    damping: float = 0.0
    max_torque: float = 5.0
    init_speed: float = 2.0
    bob_radius: float = 1.6
    substeps: int = 20

    dim_u = 1

    def _accel(self, theta, omega, u):
        return -(self.g / self.length) * math.sin(theta) - self.damping * omega + u / (self.mass * self.length**2)

    def _rk4(self, theta, omega, u, h):
        k1 = (omega, self._accel(theta, omega, u))
        k2 = (omega + 0.5 * h * k1[1], self._accel(theta + 0.5 * h * k1[0], omega + 0.5 * h * k1[1], u))
        k3 = (omega + 0.5 * h * k2[1], self._accel(theta + 0.5 * h * k2[0], omega + 0.5 * h * k2[1], u))
        k4 = (omega + h * k3[1], self._accel(theta + h * k3[0], omega + h * k3[1], u))
        theta = theta + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        omega = omega + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        return theta, omega

    def energy(self, angle, angular_velocity):
        """Mechanical energy per unit mass, elementwise."""
        return 0.5 * (self.length * angular_velocity) ** 2 - self.g * self.length * np.cos(angle)

    def simulate(self, rng: np.random.Generator) -> States:
        """One sequence of states drawn with ``rng`` (dict of arrays ``(T, ...)``)."""
        theta = rng.uniform(-math.pi, math.pi)
        omega = rng.uniform(-self.init_speed, self.init_speed)
        u = rng.uniform(-self.max_torque, self.max_torque, size=(self.T, 1))
        u[0] = 0.0
        angle, angvel = np.empty(self.T), np.empty(self.T)
        h = self.dt / self.substeps
        for t in range(self.T):
            if t > 0:
                for _ in range(self.substeps):
                    theta, omega = self._rk4(theta, omega, float(u[t, 0]), h)
            angle[t], angvel[t] = theta, omega
        scale = (self.size / 2 - self.bob_radius - 0.5) / self.length  # pixels per metre
        centre = self.size / 2
        position = np.stack(
            [centre + scale * self.length * np.sin(angle), centre - scale * self.length * np.cos(angle)], -1
        )
        velocity = scale * self.length * angvel[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
        return {"position": position, "velocity": velocity, "u": u, "angle": angle, "angular_velocity": angvel}

    def render(self, states):
        """Frames ``(n, T, size, size)`` uint8 of the stacked ``states``."""
        frames = render_discs(states["position"], self.bob_radius, self.size)
        centre = np.full(2, self.size / 2)
        for s in np.linspace(0.0, 0.8, 6):  # rod: small discs from the pivot to the bob
            dots = centre + s * (states["position"] - centre)
            frames |= render_discs(dots, 0.75, self.size)
        return frames


ENVIRONMENTS = {
    "box": BallEnvironment,
    "box_gravity": GravityEnvironment,
    "polygon": PolygonEnvironment,
    "pong": PongEnvironment,
    "pendulum": PendulumEnvironment,
}

# (train, valid, test) sequences per environment
DEFAULT_SPLITS = {
    "box": (5000, 500, 1000),
    "box_gravity": (5000, 500, 1000),
    "polygon": (5000, 500, 1000),
    "pong": (5000, 500, 1000),
    "pendulum": (500, 500, 500),
}
