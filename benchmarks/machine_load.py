"""What the 1-minute load average says about a benchmark run, for the benchmark scripts beside this file."""

from __future__ import annotations

import os


def load_note() -> str:
    """The measured load average and whether other processes shared the cores (not assumed)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    return (f"load average {load:.1f} on {cores} cores: other processes shared the machine" if load > cores
            else f"load average {load:.1f} on {cores} cores: a quiet machine")
