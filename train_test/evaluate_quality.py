"""Command-line name of the synthetic-ECG quality report, kept for the command lines already written.

The report lives in the package :mod:`train_test.quality` (metrics, physiology, sources, classifier features,
comparisons, plots, Markdown and the driver); ``python -m train_test.evaluate_quality`` is the command that
``scripts/evaluate_quality.sh``, the README and users' scripts call, so this module only runs
:func:`train_test.quality.driver.main` and re-exports the names the former module offered (``evaluate``, ``main``,
``parse_args``, ``quality_markdown``, ``sample_rows``, ``non_finite_rows``, ``generated_sources``).

Example::

    python -m train_test.evaluate_quality --data_dir data/prepared --generated_root results/generated \\
        --out_dir results/quality --arch tiny --epochs 1 --device cpu
"""

from train_test.quality.driver import QUALITY_FORMAT, evaluate, main, parse_args  # noqa: F401
from train_test.quality.markdown import quality_markdown  # noqa: F401
from train_test.quality.sources import generated_sources, non_finite_rows, sample_rows  # noqa: F401

if __name__ == "__main__":
    main(parse_args())
