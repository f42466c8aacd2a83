"""esrerank's benchmarks, run from the repository root as modules: ``python -m benchmarks.<name> --help``.

The index of the scripts, what each measures, its peers, its command, its results file and its docs page is
``benchmarks/README.md``; the helpers they share are in :mod:`benchmarks.common`, the data generators in
:mod:`benchmarks.generators`.
"""
