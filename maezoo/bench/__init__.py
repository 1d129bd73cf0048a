"""The cross-modality benchmark: named suites of recipes, run as separate processes, recorded as JSON, rendered to
Markdown and PNG.

    maezoo bench --suite quick          run (or continue) the suite; one JSON file per recipe under benchmarks/results/quick/
    maezoo bench report --suite quick   docs/benchmarks.md, the README summary and the plots, from those files alone

Layers: this package sits above the systems (it runs recipes through the CLI in child processes and reads their run
folders); nothing below imports it.
"""

from maezoo.bench.suites import SUITES, SuiteEntry, get_suite

__all__ = ["SUITES", "SuiteEntry", "get_suite"]
