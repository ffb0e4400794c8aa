"""Data: video/audio I/O (``media``) and the labelled synthetic talking-head corpus (``synthetic``)."""
