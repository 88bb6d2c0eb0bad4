"""Task cards and their registry, and the scan-level labels a task takes from a dataset reader."""
