"""Export the fused detector to one static graph per target, in bundles with manifests."""
