"""Procedural 3D Shapes renderer: the real dataset's scene and factors, no download.

The scene: a room with a floor and three walls, one object standing on the floor in the middle, a
directional light with Lambert shading and the object's shadow, and a camera orbiting the object by
``orientation``. Shapes are a cube, a vertical cylinder, a sphere and a capsule lying along the room's
x axis; ``scale`` sets the object's size. Floor, wall and object are coloured by their hue at full HSV
saturation and value, times the shading.

Only (scale, shape, orientation), 480 combinations, change the geometry; hues only colour it. The
renderer therefore ray-casts each geometry once (float64, 3x3 supersampling, analytic ray/primitive
intersections) into a *coverage map*: for each pixel and surface (floor, wall, object), the shading
integrated over the pixel, in integer units of 1/4096. An image is then a gather and an exact integer
colourisation, so rendering is fast and bit-identical on every call and device.

Example:
    >>> renderer = Shapes3DRenderer()
    >>> renderer.images([0, 479999]).shape
    torch.Size([2, 64, 64, 3])
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
import torch

from metasparse.atomic import write_atomically
from metasparse.data.factors import FACTOR_SIZES, NUM_IMAGES, factor_values

__all__ = [
    "IMAGE_SIZE",
    "NUM_GEOMETRIES",
    "RENDERER_VERSION",
    "SURFACES",
    "Shapes3DRenderer",
    "build_coverage_maps",
    "default_cache_dir",
    "hue_to_rgb",
]

RENDERER_VERSION = 1
IMAGE_SIZE = 64
SURFACES = ("floor", "wall", "object")
NUM_GEOMETRIES = FACTOR_SIZES[3] * FACTOR_SIZES[4] * FACTOR_SIZES[5]

_SHADE_BITS = 12
_SHADE_ONE = 1 << _SHADE_BITS
_NUM_HUES = FACTOR_SIZES[0]
_HUE_STRIDES = (NUM_IMAGES // FACTOR_SIZES[0], NUM_IMAGES // (FACTOR_SIZES[0] * FACTOR_SIZES[1]),
                NUM_GEOMETRIES)
_EPS = 1e-9
_CPU_COLOUR_CHUNK = 64
_DEVICE_COLOUR_CHUNK = 8192

Vector = list[torch.Tensor]  # x, y, z components, broadcastable against each other (rays, or sizes x rays)


@dataclass(frozen=True)
class _Scene:
    """World units: the object's half-width is ``object_size * scale``; y is up; walls at z / ±x."""

    camera_distance: float = 9.0
    camera_height: float = 3.2
    target_height: float = 1.1
    field_of_view_deg: float = 42.0
    back_wall_z: float = 6.0
    side_wall_x: float = 5.5
    object_size: float = 1.15
    capsule_radius: float = 0.55      # times the object's half-width
    capsule_half_length: float = 0.8  # of the capsule's axis, times the object's half-width
    light: tuple[float, float, float] = (-0.45, 1.0, -0.75)
    ambient: float = 0.42
    supersample: int = 3


_SCENE = _Scene()


def hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] of hues at full HSV saturation and value (as ``colorsys.hsv_to_rgb(h, 1, 1)``).

    Args:
        hue: Tensor of hues in [0, 1).

    Returns:
        Tensor of shape ``hue.shape + (3,)``.

    Example:
        >>> hue_to_rgb(torch.tensor([0.0, 1 / 3])).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    sextant = hue.unsqueeze(-1) * 6
    centres = torch.tensor([3.0, 2.0, 4.0], dtype=sextant.dtype, device=sextant.device)
    signs = torch.tensor([1.0, -1.0, -1.0], dtype=sextant.dtype, device=sextant.device)
    offsets = torch.tensor([-1.0, 2.0, 2.0], dtype=sextant.dtype, device=sextant.device)
    return (signs * (sextant - centres).abs() + offsets).clamp(0, 1)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/metasparse``, or ``~/.cache/metasparse`` when ``XDG_CACHE_HOME`` is unset.

    Example:
        >>> default_cache_dir().name
        'metasparse'
    """
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "metasparse"


# ---- ray casting (float64, batched: rays along the last dimension, object sizes along the first) ----
# Every step is an elementwise IEEE operation or an exact integer reduction, so the maps come out the same
# on any device and thread count.

def _camera_rays(orientation_deg: float, scene: _Scene, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Origin (3,) and unit directions (P, 3) of the supersampled pixel rays, row-major from the top left.

    Computed on the CPU: CUDA divides by a scalar through its reciprocal, which can round differently.
    """
    azimuth = math.radians(orientation_deg)
    origin = (scene.camera_distance * math.sin(azimuth), scene.camera_height,
              -scene.camera_distance * math.cos(azimuth))
    forward = _normalized((-origin[0], scene.target_height - origin[1], -origin[2]))
    right = _normalized((-forward[2], 0.0, forward[0]))  # forward x world-up
    up = (right[1] * forward[2] - right[2] * forward[1], right[2] * forward[0] - right[0] * forward[2],
          right[0] * forward[1] - right[1] * forward[0])  # right x forward
    size = IMAGE_SIZE * scene.supersample
    half_extent = math.tan(math.radians(scene.field_of_view_deg) / 2)
    steps = (torch.arange(size, dtype=torch.float64) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(-steps * half_extent, steps * half_extent, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    directions = [forward[k] + u * right[k] + v * up[k] for k in range(3)]
    norm = (directions[0] * directions[0] + directions[1] * directions[1]
            + directions[2] * directions[2]).sqrt()
    directions = torch.stack(directions, -1) / norm[:, None]
    return torch.tensor(origin, dtype=torch.float64, device=device), directions.to(device)


def _normalized(vector: tuple[float, float, float]) -> tuple[float, float, float]:
    norm = math.sqrt(sum(c * c for c in vector))
    return (vector[0] / norm, vector[1] / norm, vector[2] / norm)


def _first_hit(*candidates: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Smallest valid ray parameter over ``(t, valid)`` candidates; ``inf`` where none is valid."""
    hits = [torch.where(valid & (t > _EPS), t, torch.inf) for t, valid in candidates]
    return torch.stack(torch.broadcast_tensors(*hits)).amin(0)


def _sphere_t(o: Vector, d: Vector, centre: tuple, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry ray parameter of a sphere and whether the ray's line meets it."""
    oc = [o[k] - centre[k] for k in range(3)]
    b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2]
    c = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - radius * radius
    h = b * b - c
    return -b - h.clamp_min(0).sqrt(), h >= 0


def _box_t(o: Vector, d: Vector, low: tuple, high: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test of an axis-aligned box: entry and exit ray parameters and the axis of the entry face."""
    near, far, near_axis = None, None, None
    for k in range(3):
        inverse = 1 / torch.where(d[k].abs() < _EPS, _EPS, d[k])
        t1, t2 = (low[k] - o[k]) * inverse, (high[k] - o[k]) * inverse
        t_min, t_max = torch.minimum(t1, t2), torch.maximum(t1, t2)
        if near is None:
            near, far, near_axis = t_min, t_max, torch.zeros_like(t_min, dtype=torch.long)
        else:
            near_axis = torch.where(t_min > near, k, near_axis)
            near, far = torch.maximum(near, t_min), torch.minimum(far, t_max)
    return near, far, near_axis


def _intersect_cube(o: Vector, d: Vector, s: torch.Tensor) -> tuple[torch.Tensor, Vector]:
    near, far, near_axis = _box_t(o, d, (-s, 0.0, -s), (s, 2 * s, s))
    t = _first_hit((near, near <= far))
    return t, [torch.where(near_axis == k, -torch.sign(d[k]), 0.0) for k in range(3)]


def _intersect_cylinder(o: Vector, d: Vector, s: torch.Tensor) -> tuple[torch.Tensor, Vector]:
    a = (d[0] * d[0] + d[2] * d[2]).clamp_min(_EPS)
    b = o[0] * d[0] + o[2] * d[2]
    h = b * b - a * (o[0] * o[0] + o[2] * o[2] - s * s)
    t_side = (-b - h.clamp_min(0).sqrt()) / a
    y_side = o[1] + t_side * d[1]
    t_top = (2 * s - o[1]) / torch.where(d[1].abs() < _EPS, _EPS, d[1])
    x_top, z_top = o[0] + t_top * d[0], o[2] + t_top * d[2]
    side_valid = (h >= 0) & (y_side >= 0) & (y_side <= 2 * s)
    top_valid = x_top * x_top + z_top * z_top <= s * s
    t = _first_hit((t_side, side_valid), (t_top, top_valid))
    on_top = t == torch.where(top_valid, t_top, torch.nan)
    x, z = o[0] + t * d[0], o[2] + t * d[2]
    return t, [torch.where(on_top, 0.0, x / s), on_top.to(torch.float64), torch.where(on_top, 0.0, z / s)]


def _intersect_sphere(o: Vector, d: Vector, s: torch.Tensor) -> tuple[torch.Tensor, Vector]:
    t = _first_hit(_sphere_t(o, d, (0.0, s, 0.0), s))
    p = [o[k] + t * d[k] for k in range(3)]
    return t, [p[0] / s, (p[1] - s) / s, p[2] / s]


def _intersect_capsule(o: Vector, d: Vector, s: torch.Tensor, scene: _Scene) -> tuple[torch.Tensor, Vector]:
    radius, half_length = scene.capsule_radius * s, scene.capsule_half_length * s
    # side: the infinite cylinder around the axis y = radius, z = 0, clipped to |x| <= half_length
    oy = o[1] - radius
    a = (d[1] * d[1] + d[2] * d[2]).clamp_min(_EPS)
    b = oy * d[1] + o[2] * d[2]
    h = b * b - a * (oy * oy + o[2] * o[2] - radius * radius)
    t_side = (-b - h.clamp_min(0).sqrt()) / a
    x_side = o[0] + t_side * d[0]
    side_valid = (h >= 0) & (x_side.abs() <= half_length)
    end_hits = [_sphere_t(o, d, (sign * half_length, radius, 0.0), radius) for sign in (-1.0, 1.0)]
    t = _first_hit((t_side, side_valid), *end_hits)
    p = [o[k] + t * d[k] for k in range(3)]
    axis_x = p[0].clamp(-half_length, half_length)
    return t, [(p[0] - axis_x) / radius, (p[1] - radius) / radius, p[2] / radius]


def _intersect_object(shape: int, o: Vector, d: Vector, s: torch.Tensor,
                      scene: _Scene) -> tuple[torch.Tensor, Vector]:
    """Ray parameter (S, P) and unit normal components of the first hit with object ``shape``."""
    if shape == 3:
        return _intersect_capsule(o, d, s, scene)
    return (_intersect_cube, _intersect_cylinder, _intersect_sphere)[shape](o, d, s)


def _background(origin: torch.Tensor, directions: torch.Tensor,
                scene: _Scene) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray parameter, surface (0 floor, 1 wall) and normal . light of the room behind the object."""
    light = _normalized(scene.light)
    o = origin.tolist()
    d = directions.unbind(-1)
    planes = [  # (ray parameter, valid, surface, normal . light)
        (-o[1] / d[1], d[1] < 0, 0, light[1]),
        ((scene.back_wall_z - o[2]) / d[2], d[2] > 0, 1, -light[2]),
        ((scene.side_wall_x - o[0]) / d[0], d[0] > 0, 1, -light[0]),
        ((-scene.side_wall_x - o[0]) / d[0], d[0] < 0, 1, light[0]),
    ]
    t = _first_hit(*((t, valid) for t, valid, _, _ in planes))
    surface = torch.zeros_like(t, dtype=torch.long)
    lambert = torch.zeros_like(t)
    for t_plane, valid, plane_surface, normal_dot_light in planes:
        is_plane = valid & (t_plane == t)
        surface = torch.where(is_plane, plane_surface, surface)
        lambert = torch.where(is_plane, max(normal_dot_light, 0.0), lambert)
    return t, surface, lambert


def _shade(lambert: torch.Tensor, lit: torch.Tensor | float, scene: _Scene) -> torch.Tensor:
    return scene.ambient + (1 - scene.ambient) * lambert.clamp_min(0) * lit


def _object_bound_hits(origins: torch.Tensor, directions: torch.Tensor, scene: _Scene) -> torch.Tensor:
    """Mask of the rays that pass through a box around every object: only those can see or touch one."""
    size = 1.01 * scene.object_size * float(factor_values("scale").max())
    half_x = size * max(1.0, scene.capsule_radius + scene.capsule_half_length)
    near, far, _ = _box_t(list(origins.unbind(-1)), list(directions.unbind(-1)), (-half_x, 0.0, -size),
                          (half_x, 2 * size, size))
    return (near <= far) & (far > 0)


def _orientation_maps(orientation_deg: float, scene: _Scene, device: torch.device) -> torch.Tensor:
    """Coverage maps int32 (scale, shape, 64, 64, 3) for one orientation."""
    origin, directions = _camera_rays(orientation_deg, scene, device)
    t_room, room_surface, room_lambert = _background(origin, directions, scene)
    light = torch.tensor(_normalized(scene.light), dtype=torch.float64, device=device)
    room_points = origin + t_room[:, None] * directions
    surfaces = torch.arange(len(SURFACES), device=device)
    room_units = torch.round(_shade(room_lambert, 1.0, scene) * _SHADE_ONE).to(torch.int32)
    room_maps = torch.where(room_surface[:, None] == surfaces, room_units[:, None], 0)
    # Rays that can neither see the object nor lie in its shadow keep the room's colour: skip them.
    near = torch.nonzero(_object_bound_hits(origin[None], directions, scene)
                         | _object_bound_hits(room_points, light[None], scene)).squeeze(1)
    o_camera, d_camera = list(origin[None].unbind(-1)), list(directions[near].unbind(-1))
    o_shadow, d_light = list(room_points[near].unbind(-1)), list(light[None].unbind(-1))
    sizes = (scene.object_size * factor_values("scale").to(device)).unsqueeze(-1)
    per_shape = []
    for shape in range(FACTOR_SIZES[4]):
        lit = torch.isinf(_intersect_object(shape, o_shadow, d_light, sizes, scene)[0]).to(torch.float64)
        t_object, normal = _intersect_object(shape, o_camera, d_camera, sizes, scene)
        on_object = t_object < t_room[near]
        object_lambert = normal[0] * light[0] + normal[1] * light[1] + normal[2] * light[2]
        room_shade = _shade(room_lambert[near], lit, scene)
        shade = torch.where(on_object, _shade(object_lambert, 1.0, scene), room_shade)
        surface = torch.where(on_object, 2, room_surface[near])
        units = torch.round(shade * _SHADE_ONE).to(torch.int32)
        maps = room_maps.expand(sizes.shape[0], -1, -1).clone()
        maps[:, near] = torch.where(surface[..., None] == surfaces, units[..., None], 0)
        per_shape.append(maps)
    subsamples = scene.supersample
    maps = torch.stack(per_shape, 1).reshape(-1, IMAGE_SIZE, subsamples, IMAGE_SIZE, subsamples, 3)
    total = maps.sum((2, 4), dtype=torch.int32)
    count = subsamples * subsamples
    return torch.div(total + count // 2, count, rounding_mode="floor").reshape(
        FACTOR_SIZES[3], FACTOR_SIZES[4], IMAGE_SIZE, IMAGE_SIZE, 3)


def build_coverage_maps(device: str | torch.device = "cpu") -> torch.Tensor:
    """Ray-cast all 480 geometries (scale x shape x orientation) of the scene.

    Args:
        device: Where to compute (float64 on CPU or GPU) and return the maps.

    Returns:
        int16 tensor (480, 3, 64, 64): for geometry ``g = flat_index % 480``, each surface (floor, wall,
        object) and pixel, the surface's shading integrated over the pixel, in units of 1/4096 (at most
        4096 summed over surfaces).

    Example:
        >>> maps = build_coverage_maps()  # doctest: +SKIP
        >>> maps.shape                    # doctest: +SKIP
        torch.Size([480, 3, 64, 64])
    """
    device = torch.device(device)
    orientations = factor_values("orientation").tolist()
    with _cpu_threads(1) if device.type == "cpu" else contextlib.nullcontext():
        maps = torch.stack([_orientation_maps(angle, _SCENE, device) for angle in orientations], 2)
    maps = maps.reshape(NUM_GEOMETRIES, IMAGE_SIZE, IMAGE_SIZE, len(SURFACES)).permute(0, 3, 1, 2)
    return maps.to(torch.int16).contiguous()


@contextlib.contextmanager
def _cpu_threads(count: int) -> Iterator[None]:
    """Run torch CPU ops with ``count`` intra-op threads, then restore the previous setting."""
    # The build is thousands of ops on ~1e4-element tensors: there, thread hand-offs cost more than they
    # save, up to 10x on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---- colourisation and the renderer ----

def _hue_palette(device: torch.device) -> torch.Tensor:
    """int32 (10, 3) RGB in 0..255 of the 10 hue values."""
    return torch.round(hue_to_rgb(factor_values("floor_hue")) * 255).to(torch.int32).to(device)


def _cache_file(cache_dir: Path) -> Path:
    key = hashlib.sha256(repr((RENDERER_VERSION, IMAGE_SIZE, astuple(_SCENE))).encode()).hexdigest()[:16]
    return cache_dir / f"shapes3d-coverage-v{RENDERER_VERSION}-{key}.npy"


def _load_cached(file: Path) -> torch.Tensor | None:
    try:
        maps = np.load(file, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if maps.shape != (NUM_GEOMETRIES, len(SURFACES), IMAGE_SIZE, IMAGE_SIZE) or maps.dtype != np.int16:
        return None
    return torch.from_numpy(maps)


def _save_maps(maps: torch.Tensor, file: Path) -> None:
    with file.open("wb") as stream:  # np.save on a path would append ".npy" to the temporary name
        np.save(stream, maps.cpu().numpy())


class Shapes3DRenderer:
    """Render 3D Shapes images by flat index (the real file's row order), on CPU or GPU.

    The coverage maps are built on first use (a few seconds on two CPU cores) and kept in memory; with
    ``cache`` they are also stored in, and later loaded from, a file written atomically.

    Args:
        device: Device of the coverage maps and of the returned images.
        cache: ``False``: no file; ``True``: a file in `default_cache_dir`; a path: a file in that
            directory.

    Example:
        >>> renderer = Shapes3DRenderer(device="cpu")
        >>> images = renderer.images(torch.arange(8))   # uint8 (8, 64, 64, 3)
        >>> bool((images[0] == renderer.images([0])[0]).all())
        True
    """

    def __init__(self, device: str | torch.device = "cpu", cache: bool | str | os.PathLike = False) -> None:
        if not isinstance(cache, bool | str | os.PathLike):
            raise TypeError(f"cache must be a bool or a directory path, got {type(cache).__name__}")
        self.device = torch.device(device)
        if cache is False:
            self.cache_file: Path | None = None
        else:
            self.cache_file = _cache_file(default_cache_dir() if cache is True else Path(cache).expanduser())
        self._maps: torch.Tensor | None = None
        self._palette = _hue_palette(self.device)

    @property
    def coverage_maps(self) -> torch.Tensor:
        """int16 (480, 3, 64, 64) coverage maps (see `build_coverage_maps`), built on first access."""
        if self._maps is None:
            maps = _load_cached(self.cache_file) if self.cache_file is not None else None
            if maps is None:
                maps = build_coverage_maps(self.device)
                if self.cache_file is not None:
                    write_atomically(self.cache_file, lambda temporary: _save_maps(maps, temporary))
            self._maps = maps.to(self.device)
        return self._maps

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """Render images by flat index.

        Args:
            indices: 1-D int64 tensor of flat indices in ``[0, 480000)`` (not checked here; see
                `metasparse.data.Shapes3D.images` for the checked entry point).

        Returns:
            uint8 tensor (N, 64, 64, 3) on `device`.
        """
        indices = torch.as_tensor(indices, device=self.device).long().reshape(-1)
        images = torch.empty((indices.shape[0], IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8,
                             device=self.device)
        on_cpu = self.device.type == "cpu"
        chunk = _CPU_COLOUR_CHUNK if on_cpu else _DEVICE_COLOUR_CHUNK
        # On CPU: chunks small enough for the int32 intermediates to stay in cache, and one thread: on a
        # busy 2-core machine each multi-threaded op waited ~8 ms for a descheduled thread, 10x its work.
        with _cpu_threads(1) if on_cpu else contextlib.nullcontext():
            for start in range(0, indices.shape[0], chunk):
                images[start:start + chunk] = self._colourise(indices[start:start + chunk])
        return images

    def _colourise(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 64, 64, 3): sum over surfaces of coverage x surface RGB, exact in int32."""
        coverage = self.coverage_maps.index_select(0, indices % NUM_GEOMETRIES).to(torch.int32)
        planes = torch.full((indices.shape[0], 3, IMAGE_SIZE, IMAGE_SIZE), _SHADE_ONE // 2, dtype=torch.int32,
                            device=self.device)  # the half rounds the final shift to nearest
        for surface, stride in enumerate(_HUE_STRIDES):
            rgb = self._palette[torch.div(indices, stride, rounding_mode="floor") % _NUM_HUES]
            for channel in range(3):
                planes[:, channel] += coverage[:, surface] * rgb[:, channel, None, None]
        return (planes >> _SHADE_BITS).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
