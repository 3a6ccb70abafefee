# To run this example:
#   CLAY_CONFIG=simple-clay.conf clay-devserver
from __future__ import absolute_import  # noqa: UP010

from clay import app


@app.route("/", methods=["GET"])
def hello():
    """Ensures that the world is still there."""
    return "Hello World!"
