"""The DMMSA reference system: ConFEDE's architecture trained with the DMMSA objective.

Import it as a package (``pip install -e examples`` from the repository root); the scripts
``examples/dmmsa/train.py``, ``evaluate_real.py`` and ``prepare_mosi.py`` are its commands.
"""
