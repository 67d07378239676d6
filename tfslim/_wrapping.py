"""What tfslim's layer wrappers share: copying a layer and building it the way it was built.

Keras builds a `Wrapper` from the shape of its first input only, which is not enough for
layers with several inputs (e.g. `MultiHeadAttention`); such a layer builds from its own
build config, so the wrappers save and restore it beside theirs.
"""

from __future__ import annotations


def copy_layer(layer):
    """A new layer of the same class and config as `layer`, with new weights."""
    return layer.__class__.from_config(layer.get_config())


def build_like(copy, original) -> None:
    """Builds `copy` from `original`'s build config, if it has one."""
    build_config = original.get_build_config()
    if build_config:
        copy.build_from_config(build_config)


class InnerBuildConfig:
    """Mixin for `keras.layers.Wrapper` subclasses: the inner layer's build config travels."""

    def get_build_config(self) -> dict | None:
        config = super().get_build_config()
        if config is not None and self.layer.built:
            inner = self.layer.get_build_config()
            if inner:
                config["layer_build_config"] = inner
        return config

    def build_from_config(self, config: dict) -> None:
        inner = config.get("layer_build_config")
        if inner and not self.layer.built:
            self.layer.build_from_config(inner)
        super().build_from_config(config)
