"""Test-wide settings."""

import torch as th

# The tests' networks are tiny: intra-op threads only add overhead, several times over on a busy 2-core machine.
th.set_num_threads(1)
