"""Input handling: images from files and arrays, prompt validation, frames of videos and
volumes."""

from samkit.io.image import list_images, load_image, to_rgb_uint8
from samkit.io.video import VideoWriter, open_frames

__all__ = ["VideoWriter", "list_images", "load_image", "open_frames", "to_rgb_uint8"]
