"""Rendering one tile of one sample pass: meshes from the cache, the world, the kernel."""

from __future__ import annotations

import numpy as np

from francine.domain.producer import ResourceInfo, Resources, Tile
from francine.producers.pathtracer import kernel
from francine.producers.pathtracer.meshes import mesh_bvh
from francine.producers.pathtracer.world import World, build_world

_SEED_MASK = (1 << 64) - 1


def world_for(scene: dict, resources: Resources) -> World:
    meshes = scene["meshes"]
    return build_world(
        scene, lambda i: mesh_bvh(resources, meshes[i]["resource"], f"meshes[{i}].resource")
    )


def render_world(
    world: World,
    width: int,
    height: int,
    tile: Tile,
    seed: int,
    spp: int,
    max_depth: int,
    nee: bool = True,
) -> np.ndarray:
    """The kernel on a world: float32 (tile.height, tile.width, 3).

    ``nee=False`` turns light sampling off (BSDF sampling only): a slower estimator of
    the same image, which the tests compare against.
    """
    return kernel.render_tile(
        world.cam,
        width,
        height,
        tile.x0,
        tile.y0,
        tile.width,
        tile.height,
        spp,
        max_depth,
        np.uint64(seed & _SEED_MASK),
        world.env,
        world.mats,
        world.geom,
        world.lights,
        nee,
        world.stack_size,
    )


def render_tile(scene: dict, tile: Tile, seed: int, resources: Resources) -> np.ndarray:
    """One sample pass of one tile of a validated scene."""
    if tile.x0 < 0 or tile.y0 < 0 or tile.x0 + tile.width > scene["width"]:
        raise ValueError(f"tile {tile} is outside the {scene['width']}×{scene['height']} image")
    if tile.y0 + tile.height > scene["height"]:
        raise ValueError(f"tile {tile} is outside the {scene['width']}×{scene['height']} image")
    world = world_for(scene, resources)
    return render_world(
        world,
        scene["width"],
        scene["height"],
        tile,
        seed,
        scene["samples_per_pixel"],
        scene["max_depth"],
    )


def warm_up() -> None:
    """Compile the kernels on a tiny scene with a mesh and every kind of material."""
    import pathlib
    import tempfile

    from francine.producers.pathtracer.scene import validate

    obj = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "tetra.obj"
        path.write_bytes(obj)
        info = ResourceInfo("tetra.obj", "0" * 64, len(obj))
        resources = Resources({"tetra.obj": info}, lambda _info: path)
        scene = validate(
            {
                "width": 4,
                "height": 4,
                "samples_per_pixel": 2,
                "materials": {
                    "d": {},
                    "m": {"type": "mirror"},
                    "g": {"type": "glass"},
                    "e": {"emission": 1},
                },
                "spheres": [{"center": [0, 0, 0], "radius": 1, "material": "g"}],
                "meshes": [{"resource": "tetra.obj", "material": "e"}],
            },
            resources.infos,
        )
        render_tile(scene, Tile(0, 0, 4, 4), 0, resources)
