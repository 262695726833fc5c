"""``python3 -m aicert.agent``: the image runs the agent this way (no console scripts there)."""

from aicert.agent.cli import run

run()
