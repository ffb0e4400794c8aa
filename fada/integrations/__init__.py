"""Adapters that plug fada into serving frameworks. Each one lives in its own module behind its own extra
(``fada.integrations.livekit`` needs ``pip install "fada[livekit]"``), so importing this package pulls in nothing."""
