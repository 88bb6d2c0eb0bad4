"""CT scans as clearbench reads them: the Scan type, HU windows, dataset readers and synthetic cohorts."""
