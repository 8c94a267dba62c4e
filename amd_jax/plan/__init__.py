"""The TPU plan: compile a config's steps for a real TPU topology on this (CPU) host, with no weights and no data,
and report what the compiler says they cost per chip (amd_jax/plan/__main__.py has the command).

core.py builds the plan through the trainer's own Session (abstract mode), figures.py turns executables into
figures, hlo.py reads the collectives from the optimized HLO, chips.py holds the chip table.
"""
