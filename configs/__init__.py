"""Experiment configs: one ``get_config(arg)`` file per experiment, loaded by ``--config``.

A package so that config files share ``configs.common`` through an ordinary
import; the launchers load them by path (``--config configs/X.py[:variants]``)
from the repository root, which puts that root on ``sys.path``.
"""
