"""The torch reference's batch: large where a face is cheap, one face at a time where activations dominate memory."""

from dfedge.eval.gate import MAX_REFERENCE_BATCH, reference_batch
from dfedge.models.factory import spec_gflops
from dfedge.models.spec import DetectorSpec


def test_the_reference_batches_cheap_faces_and_scores_full_size_ones_one_at_a_time():
    toy = spec_gflops(DetectorSpec(preset="toy"))["total"]
    full = spec_gflops(DetectorSpec(preset="full", random_probe=True))["total"]
    assert reference_batch(toy) == MAX_REFERENCE_BATCH  # the toy build's gate scores as it did before (batch 8)
    assert reference_batch(full) == 1  # a batch of 8 full-size faces held 5.2 GB of activations
    assert [reference_batch(g) for g in (0.0, 16.0, 32.0, 1e9)] == [8, 4, 2, 1]
