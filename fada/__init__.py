"""fada: fast audio-driven talking-portrait diffusion (FADA: mixed-supervised multi-CFG distillation)."""

__version__ = "0.1.0"
