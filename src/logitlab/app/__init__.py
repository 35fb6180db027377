"""The application layer, between the command line and the library: code that runs programs
rather than computes numbers: the evaluation report of ``logitlab report``/``evaluate``
(:mod:`logitlab.app.evaluate`: reads a predictions file, assembles the metrics) and the benchmark
harness (:mod:`logitlab.app.bench`) with the case ``logitlab bench`` runs
(:mod:`logitlab.app.linear_ce`).

Nothing in the library packages (the core, ``metrics``, ``diagnostics``, ``torch``, ``report``)
imports from here.
"""
