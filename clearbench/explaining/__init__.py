"""Explaining a trained head: attention across slices (plots) and the attention hit rate (a number).

Named ``explaining`` so that ``clearbench.explain`` stays the function of the public API.
"""
