"""A script entry point for hosts that run ``python backend/collector_loop.py`` (same as ``collector``).

The endpoint ``POST /api/upload-user-data`` lives in ``collector/routes/uploads.py``; the app is
assembled in ``collector/app.py``. Run ``python backend/collector_loop.py`` or ``collector serve``.
"""

import sys

from collector.cli import main

if __name__ == "__main__":
    main(sys.argv[1:] or ["serve"])
