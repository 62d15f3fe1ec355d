"""Engines train populations of members and report per-epoch metrics.

The engine knows nothing of search or the CLI: it takes members (config, train indices,
validation indices, seed) and yields EpochResults; the caller may stop any member.
"""

from deepnet.engine.member import EpochResult, Member, Status
from deepnet.engine.population import PopulationEngine
from deepnet.engine.sequential import SequentialEngine
from deepnet.engine.training import Engine, Training

__all__ = [
    "Engine",
    "EpochResult",
    "Member",
    "PopulationEngine",
    "SequentialEngine",
    "Status",
    "Training",
]
