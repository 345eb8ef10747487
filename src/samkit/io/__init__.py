"""Input handling: images from files and arrays, prompt validation."""

from samkit.io.image import list_images, load_image, to_rgb_uint8

__all__ = ["list_images", "load_image", "to_rgb_uint8"]
