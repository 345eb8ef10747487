"""samkit: the Segment Anything Model and the working system around it.

The official API is mirrored::

    from samkit import SamPredictor, sam_model_registry
    sam = sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")
    predictor = SamPredictor(sam)
"""

from samkit.amg import SamAutomaticMaskGenerator
from samkit.checkpoint import CheckpointError, save_checkpoint
from samkit.config import SamConfig, ViTConfig
from samkit.errors import SamkitError
from samkit.io.image import load_image
from samkit.modeling import Sam
from samkit.predictor import SamPredictor
from samkit.registry import build_sam, list_models, sam_model_registry

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "OnnxPredictor":  # imported on first use: ONNX Runtime is an optional extra
        from samkit.backends.onnxruntime import OnnxPredictor

        return OnnxPredictor
    raise AttributeError(f"module 'samkit' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "OnnxPredictor",
    "Sam",
    "SamAutomaticMaskGenerator",
    "SamConfig",
    "SamPredictor",
    "SamkitError",
    "ViTConfig",
    "build_sam",
    "list_models",
    "load_image",
    "sam_model_registry",
    "save_checkpoint",
]
