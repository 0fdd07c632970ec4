"""cfn client: the wire protocol, a Python API and the ``cfnctl`` command line.

This package must stay light: it never imports ``cfn_daemon``, ``redis`` or
``structlog`` so that ``cfnctl`` starts fast.
"""

__version__ = "0.1.0"
