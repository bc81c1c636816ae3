"""Differentiable episodic heads (base learners)."""
