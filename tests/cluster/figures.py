"""What the cluster tests measured, by step; conftest prints it at the end of the run."""

from __future__ import annotations

FIGURES: dict[str, object] = {}
