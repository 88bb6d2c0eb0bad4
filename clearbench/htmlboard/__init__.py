"""The HTML board: every task's leaderboard on one self-contained, offline page.

- :mod:`.data`: leaderboard DataFrames to the JSON the page embeds (no I/O);
- :mod:`.page`: that JSON to one HTML file with its script and styles inline (no I/O);
- :mod:`.build`: ``board``, which reads the store, writes the attention plots and the page.

The package is not called ``board`` so that ``clearbench.board`` stays the function.
"""
