"""mltools: tools for making ML systems fast and debugging their native side.

Importing this package is cheap: it pulls in no heavy module.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
