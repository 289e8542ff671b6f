"""Data of the Tier B benchmark tasks: the artefact registry (:mod:`.store`), the loaders
(:mod:`.loaders`) and the ``adamkit data`` command (:mod:`.cli`). Loaders never download."""
from .store import ARTEFACTS, ChecksumMismatch, DataMissing, cache_dir, locate, prepare, status

__all__ = ["ARTEFACTS", "ChecksumMismatch", "DataMissing", "cache_dir", "locate", "prepare", "status"]
