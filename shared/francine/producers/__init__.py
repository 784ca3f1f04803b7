"""The registry of producers (renderers) that sessions can name."""

from __future__ import annotations

import importlib

from francine.domain.producer import Producer, SceneError

# Imported lazily: a producer module pulls in numba, which the api does not always need.
_MODULES = {
    "ao": "francine.producers.ao",
    "blender": "francine.producers.blender",
    "pathtracer": "francine.producers.pathtracer",
}

_loaded: dict[str, Producer] = {}


def names() -> list[str]:
    return sorted(_MODULES)


def register(producer: Producer) -> None:
    """Add a producer at run time (the scale simulator's stand-in renderer)."""
    _MODULES.setdefault(producer.name, type(producer).__module__)
    _loaded[producer.name] = producer


def get(name: str) -> Producer:
    """The producer called ``name``; ``SceneError`` on the field ``producer`` otherwise."""
    if name not in _MODULES:
        raise SceneError("producer", f"unknown producer {name!r}; one of {names()}")
    if name not in _loaded:
        _loaded[name] = importlib.import_module(_MODULES[name]).PRODUCER
    return _loaded[name]


def final_image(name: str, scene: dict, mean):
    """The image the root encodes from the mean of all passes: the producer's ``finish``
    (e.g. denoising) where it has one."""
    finish = getattr(get(name), "finish", None)
    return mean if finish is None else finish(scene, mean)


def partial_channels(name: str, scene: dict) -> int:
    """The channels of this scene's partial images: the producer's ``partial_channels``
    where it depends on the scene (a denoised Blender render's partials also carry
    albedo and normal), else its ``channels``."""
    producer = get(name)
    of_scene = getattr(producer, "partial_channels", None)
    return producer.channels if of_scene is None else of_scene(scene)
