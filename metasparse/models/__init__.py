"""Models: few-shot backbones by name (learn2learn's) and the paper's 3D Shapes encoder."""

from metasparse.models.backbones import BACKBONES, build_backbone, feature_size
from metasparse.models.encoders import Shapes3DEncoder, TaskBatchNorm

__all__ = ["BACKBONES", "Shapes3DEncoder", "TaskBatchNorm", "build_backbone", "feature_size"]
