"""
The version of lhttp (the one of setup.cfg), in a leaf of its own: the
modules that name it need not import the package's face.
"""

__version__ = "0.1.0"
