"""A task card contributed by a package through the ``clearbench.tasks`` entry point."""

TINY_TASK = {
    "name": "example-tiny",
    "title": "Example plugin task: malignancy on a NIfTI cohort",
    "dataset": "nifti",
    "type": "binary",
    "labels": ["malignant"],
    "windows": ["lung"],
    "protocol": {"kind": "nested-kfold", "folds": 3, "val_fraction": 0.25, "seed": 0},
    "training": {"max_epochs": 4},
}
