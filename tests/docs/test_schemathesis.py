from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import kiln
from tests.docs.conftest import example_config
from tests.resource.live_server import serve_in_thread

ST = Path(sys.executable).parent / "st"
SEED = 20261122
EXAMPLES_PER_OPERATION = 20
#: Every request is authenticated as this account (created below): with the
#: ``accounts`` policy, schemathesis's wrong credentials really are wrong, so
#: its ``ignored_auth`` check proves that resources refuse them.
USER, PASSWORD = "alice", "wonderland-password"
AUTHENTICATION = ["--auth", f"{USER}:{PASSWORD}"]
CHEAP_ARGON2 = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ensure_resource_availability",
    "ignored_auth",
)
# Left out: positive_data_acceptance and negative_data_rejection judge a request
# by its schema alone, while the protocol answers 412 to a stale If-Match (or 409
# to a taken unique value) before looking at the body; use_after_free expects a
# collection to vanish after DELETE /collection, which deletes its records.


class _Recorder:
    """WSGI middleware counting requests and remembering every 5xx."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.server_errors: list[str] = []

    def __call__(self, environ, start_response):
        def recording_start_response(status, headers, exc_info=None):
            with self.lock:
                self.statuses[status[:3]] += 1
                if status.startswith("5"):
                    self.server_errors.append(
                        f"{status} {environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
                        f"?{environ.get('QUERY_STRING', '')}"
                    )
            return start_response(status, headers, exc_info)

        return self.app(environ, recording_start_response)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_response_violating_the_document(tmp_path):
    config = example_config(
        tmp_path,
        auth={"policies": ["accounts"]},
        accounts={"create_principals": ["system.Everyone"], "argon2": CHEAP_ARGON2},
    )
    app = kiln.create_app(config, configure_logging=False)
    signed_up = app.test_client().post(
        "/v1/accounts", json={"data": {"id": USER, "password": PASSWORD}}
    )
    assert signed_up.status_code == 201
    recorder = _Recorder(app.wsgi_app)
    app.wsgi_app = recorder
    # Schemathesis itself is not measured by coverage (the server, in this process, is).
    env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE_")}
    env["NO_COLOR"] = "1"
    with serve_in_thread(app) as url:
        run = subprocess.run(
            [
                str(ST),
                "run",
                f"{url}/v1/__api__",
                "--seed",
                str(SEED),
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--workers",
                "1",
                "--checks",
                ",".join(CHECKS),
                "--request-timeout",
                "20",
                *AUTHENTICATION,
                # Changing or deleting the account the run logs in with would
                # turn the rest of the run into 401s.
                *("--exclude-operation-id", "kiln_account_put"),
                *("--exclude-operation-id", "kiln_account_patch"),
                *("--exclude-operation-id", "kiln_account_delete"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    report = run.stdout[-20_000:] + run.stderr[-5_000:]
    assert recorder.server_errors == [], report
    assert run.returncode == 0, report
    statuses = recorder.statuses
    assert statuses.total() >= 1000, statuses
    # Not only refusals: records were created, read and listed.
    assert statuses["201"] >= 5, statuses
    assert statuses["200"] >= 100, statuses
