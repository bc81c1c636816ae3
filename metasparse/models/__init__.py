"""Models: few-shot backbones by name (learn2learn's) and the paper's 3D Shapes encoder."""

from metasparse.models.backbones import BACKBONES, build_backbone, feature_size

__all__ = ["BACKBONES", "build_backbone", "feature_size"]
