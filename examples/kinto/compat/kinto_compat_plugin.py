"""pytest plugin: point kinto-http's functional suite at ``$KINTO_SERVER_URL``.

Loaded with ``-p kinto_compat_plugin`` before the suite's conftest imports
``SERVER_URL``, so the suite runs unedited.
"""

import os

import kinto_http.constants

kinto_http.constants.SERVER_URL = os.environ["KINTO_SERVER_URL"]
