"""Airflow's local settings of ``make bench``'s floor only (see :mod:`bench.floor`)."""

from bench.floor import task_policy  # noqa: F401 -- Airflow reads the policy from this module
