"""Stages: one ``run(...)`` per ``fada`` command; the CLI is a thin layer over these."""
