"""Differentiable episodic heads (base learners), batched over episodes."""

from metasparse.heads.base import EpisodicHead
from metasparse.heads.group_lasso_svm import GroupLassoSVMHead, SVMHead
from metasparse.heads.lasso import LassoHead
from metasparse.heads.protonet import ProtoNetHead
from metasparse.heads.ridge import RidgeHead

__all__ = ["EpisodicHead", "GroupLassoSVMHead", "LassoHead", "ProtoNetHead", "RidgeHead", "SVMHead"]
