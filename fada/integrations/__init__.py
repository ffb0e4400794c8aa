"""Adapters that plug fada into serving frameworks. Each one lives in its own module behind its own extra
(``fada.integrations.livekit`` needs ``pip install -e ".[livekit]"`` from the repository), so importing this package
pulls in nothing."""
