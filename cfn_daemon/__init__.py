"""cfnd: the cfn coordination daemon."""

from cfn_client import __version__

__all__ = ["__version__"]
