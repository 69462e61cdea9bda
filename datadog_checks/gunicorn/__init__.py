from .__about__ import __version__
from .check import GunicornCheck

__all__ = ['__version__', 'GunicornCheck']
