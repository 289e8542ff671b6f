"""adamkit's version, in one place: ``pyproject.toml`` reads it (a dynamic version), ``adamkit.__version__`` and
``adamkit --version`` show it. Each release adds its section to ``CHANGELOG.md``."""

__version__ = "0.1.0"
