"""Tier B tasks: real models on packaged or generated data (see the README, "Real tasks and data").

Each module registers its tasks with :func:`adamkit.bench.registry.register`; the registry imports
every module of this package. Data comes from :mod:`adamkit.bench.data` and is never downloaded by a
task: ``adamkit data prepare TASK`` fetches what a task needs.
"""
