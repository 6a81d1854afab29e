"""Imaging: the only code that imports pydicom, numpy and Pillow.

Shipped in the imaging layer and loaded only by the imaging functions, so API functions never
pay for these libraries at cold start.
"""
