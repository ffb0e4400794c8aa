"""fada: fast audio-driven talking-portrait diffusion (FADA: mixed-supervised multi-CFG distillation)."""

__version__ = "0.2.0"
