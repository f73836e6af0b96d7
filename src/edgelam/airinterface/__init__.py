"""Air-interface applications of edge LAMs.

* :mod:`~edgelam.airinterface.prediction` -- CSI prediction: training-free classical baselines
  (no prediction, PAD-style AR extrapolation, vector Prony) and the evaluation metrics (NMSE per
  item and per speed group, spectral efficiency with predicted vs. perfect CSI).
"""
