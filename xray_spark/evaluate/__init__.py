"""The evaluate job: AUROC per finding with patient-level intervals, ROC curves, operating points."""
