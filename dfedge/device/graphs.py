"""The graphs a bundle carries, as every runtime sees them: their input name and their outputs, in order."""

INPUT_NAME = "image"  # the detector graph's input: float32 [1, 3, S, S] (NCHW) or [1, S, S, 3] (NHWC) RGB 0-255
# the detector graph's outputs, in the order the graph returns them (models/detector.py builds it)
OUTPUTS = ("logit", "probability", "token_mask", "region_tokens", "contributions", "streams", "feature")
TEMPORAL_OUTPUTS = ("logit", "probability", "valid_frames")  # the temporal head's (models/temporal.py)
