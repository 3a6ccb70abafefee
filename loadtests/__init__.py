"""kiln's load simulation: a test application, a locust scenario and an invariant checker.

See docs/loadtests.md. Nothing here imports locust except ``locustfile.py``
(locust patches the standard library with gevent when imported).
"""
