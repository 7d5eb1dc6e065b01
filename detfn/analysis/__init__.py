"""Analysis tools over a run's files and a detector's predictions: training curves and timing,
confusion matrices, precision-recall curves and AP tables, parameter and FLOP counts, export.

Each module draws on a bare matplotlib ``Figure`` (:mod:`detfn.analysis.plotting`), so no display
is needed. The ``experiments.<tool>`` entry points are thin command lines over these functions.
Submodules are imported on use: ``from detfn.analysis.confusion import confusion_matrix``.
"""
