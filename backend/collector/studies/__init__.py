"""Several studies on one collector: a registry in the bucket, each study under its own prefix.

See docs/studies.md. ``registry`` holds the studies, ``admission`` who may join one, ``routing``
which study an upload goes to, ``cors`` the browser origins, ``cli`` the tools' ``--study``.
"""
