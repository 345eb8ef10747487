"""Export to deployment formats: ONNX graphs (:mod:`samkit.export.onnx`) and their int8
quantization (:mod:`samkit.export.quantize`). Needs the ``samkit[onnx]`` extra."""

from samkit.export.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    OFFICIAL_DECODER_FILE,
    ExportedModel,
    encode_prompts,
    export_onnx,
    read_metadata,
)

__all__ = ["DECODER_FILE", "ENCODER_FILE", "OFFICIAL_DECODER_FILE", "ExportedModel",
           "encode_prompts", "export_onnx", "read_metadata"]
