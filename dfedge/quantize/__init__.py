"""Compression below fp16, per target: NNCF for OpenVINO and ONNX, ai-edge-quantizer for TFLite,
coremltools.optimize for CoreML. Each rung is written as a bundle only if it passes the AUC-drift gate."""
