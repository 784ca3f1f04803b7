"""Small ``.blend`` scenes made with ``bpy``: the demo and the tests' scenes.

Run as a script to write the demo: ``python -m francine.producers.blender.examples
demo.blend [--texture textures/checker.png]``. Needs ``bpy`` (the ``blender`` extra).
"""

from __future__ import annotations

import argparse
import math
import pathlib


def checker_png(path: pathlib.Path, size: int = 64, cells: int = 8) -> None:
    """A two-colour checkerboard PNG (orange and teal), easy to recognise in a render."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[:size, :size] // (size // cells)
    odd = ((x + y) % 2).astype(bool)
    rgb = np.where(odd[..., None], [230, 120, 20], [20, 150, 160]).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def build(path: str | pathlib.Path, width: int = 64, height: int = 48,
          texture: str | None = None, frames: int = 1, second_camera: bool = False) -> None:
    """Write a scene: a floor, a glossy sphere, a cube, an area light, a sun, a camera.

    ``texture`` (a path relative to the ``.blend``, e.g. ``textures/checker.png``, which
    must exist when the file is saved) maps an image onto the floor. With ``frames`` > 1
    the sphere moves over the frames.
    """
    import bpy

    path = pathlib.Path(path).resolve()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.name = "Shot"
    sc.render.engine = "CYCLES"
    sc.render.resolution_x, sc.render.resolution_y = width, height
    sc.render.resolution_percentage = 100
    sc.frame_start, sc.frame_end, sc.frame_current = 1, frames, 1
    sc.cycles.samples = 16

    world = bpy.data.worlds.new("Sky")
    if world.node_tree is None:
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.3, 0.4, 0.6, 1)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.8
    sc.world = world

    def material(name, color, roughness=0.5, image=None):
        m = bpy.data.materials.new(name)
        if m.node_tree is None:
            m.use_nodes = True
        bsdf = m.node_tree.nodes["Principled BSDF"]
        bsdf.inputs["Base Color"].default_value = (*color, 1)
        bsdf.inputs["Roughness"].default_value = roughness
        if image is not None:
            tex = m.node_tree.nodes.new("ShaderNodeTexImage")
            tex.image = image
            m.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        return m

    image = None
    if texture is not None:
        image = bpy.data.images.load(str(path.parent / texture))
        image.filepath = "//" + texture

    bpy.ops.mesh.primitive_plane_add(size=8, location=(0, 0, 0))
    floor = bpy.context.object
    floor.name = "Floor"
    floor.data.materials.append(material("FloorMat", (0.6, 0.6, 0.6), 0.8, image))

    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.8, location=(-0.6, 0.3, 0.8), segments=32,
                                         ring_count=16)
    sphere = bpy.context.object
    sphere.name = "Ball"
    bpy.ops.object.shade_smooth()
    sphere.data.materials.append(material("BallMat", (0.8, 0.1, 0.1), 0.2))
    if frames > 1:
        sphere.keyframe_insert("location", frame=1)
        sphere.location.x += 1.5
        sphere.keyframe_insert("location", frame=frames)

    bpy.ops.mesh.primitive_cube_add(size=0.9, location=(1.1, -0.4, 0.45),
                                    rotation=(0, 0, math.radians(30)))
    cube = bpy.context.object
    cube.name = "Box"
    cube.data.materials.append(material("BoxMat", (0.1, 0.5, 0.9), 0.5))

    bpy.ops.object.light_add(type="AREA", location=(2, -2, 4))
    light = bpy.context.object
    light.name = "Lamp"
    light.data.energy = 400
    light.data.size = 2
    light.rotation_euler = (math.radians(35), 0, math.radians(45))
    bpy.ops.object.light_add(type="SUN", location=(0, 0, 5))
    bpy.context.object.data.energy = 2

    bpy.ops.object.camera_add(location=(0, -6.5, 3.2), rotation=(math.radians(66), 0, 0))
    cam = bpy.context.object
    cam.name = "Camera"
    sc.camera = cam
    if second_camera:
        bpy.ops.object.camera_add(location=(6, -4, 3), rotation=(math.radians(70), 0,
                                                                  math.radians(55)))
        bpy.context.object.name = "Side"

    path.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(path), relative_remap=False, compress=False)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="write a small demo .blend with bpy")
    p.add_argument("output", help="the .blend to write")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--texture", help="a checker PNG to write beside the file and map "
                                     "onto the floor, by relative path (textures/checker.png)")
    p.add_argument("--frames", type=int, default=1)
    a = p.parse_args(argv)
    out = pathlib.Path(a.output).resolve()
    if a.texture:
        checker_png(out.parent / a.texture)
    build(out, a.width, a.height, a.texture, a.frames)
    print(out)


if __name__ == "__main__":
    main()
