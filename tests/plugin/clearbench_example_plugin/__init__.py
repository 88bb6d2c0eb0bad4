"""An example clearbench plugin: proves that other packages can add datasets, encoders and tasks."""
