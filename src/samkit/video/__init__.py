"""Video and volume propagation: masks carried from prompted frames through the others."""

from samkit.io.video import ArrayFrames
from samkit.video.propagate import (
    MODES,
    FrameResult,
    Prompt,
    PropagationConfig,
    VideoPropagator,
    mask_box,
    mask_points,
)

__all__ = ["MODES", "ArrayFrames", "FrameResult", "Prompt", "PropagationConfig",
           "VideoPropagator", "mask_box", "mask_points"]
