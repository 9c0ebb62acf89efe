"""Plain-PyTorch models of the detector: DINOv3, the FaRL parser, the region index, the fused detector."""
