"""Tier A problems: seconds each, no data to download. Each module registers its classes on import."""
