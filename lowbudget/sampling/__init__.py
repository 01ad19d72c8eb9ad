"""Inference: one sampling loop behind generate, compose and inpaint."""
