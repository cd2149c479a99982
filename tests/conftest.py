"""Hypothesis profiles: `ci` (derandomized, no deadline) loads automatically when CI is set;
`dev` (the default locally) explores more examples. Choose with HYPOTHESIS_PROFILE=..."""
import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=30, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# Tests are small: one thread avoids oversubscribing shared 2-core machines.
torch.set_num_threads(1)
