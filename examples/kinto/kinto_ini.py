"""Translate a Kinto ``.ini`` file's ``[app:main]`` into kiln settings.

    python examples/kinto/kinto_ini.py kinto.ini > overlay.json

The output is a configuration file to list after ``config.yaml`` in
``KILN_CONFIG``. Settings without a kiln equivalent are reported on stderr.
"""

from __future__ import annotations

import configparser
import json
import re
import sys
from typing import Any

#: Kinto settings with a kiln name, and how their value reads.
SIMPLE = {
    "userid_hmac_secret": ("auth.userid_hmac_secret", str),
    "paginate_by": ("paginate.by", int),
    "account_create_principals": ("accounts.create_principals", str.split),
    "account_write_principals": ("accounts.admin_principals", str.split),
    "attachment.base_path": ("attachments.base_path", str),
    "attachment.base_url": ("attachments.base_url", str),
    "experimental_permissions_endpoint": (
        "permissions_endpoint.enabled",
        lambda value: value.lower() == "true",
    ),
    "flush_endpoint_enabled": ("flush_endpoint.enabled", lambda value: value.lower() == "true"),
    "batch_max_requests": ("batch.max_requests", int),
}
#: ``kinto.includes`` entries, and the settings that switch them on.
INCLUDES: dict[str, dict[str, Any]] = {
    "kinto.plugins.flush": {"flush_endpoint.enabled": True},
    "kinto.plugins.accounts": {"auth.policies": ["accounts"]},
    "kinto_attachment": {"attachments.resources": ["record"]},
}
PRINCIPALS = re.compile(r"(bucket|collection|group|record)_(read|write|create)_principals\Z")


def translate(path: str) -> tuple[dict[str, Any], list[str]]:
    """The kiln settings of the Kinto config at ``path``, and the keys left out."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    flat: dict[str, Any] = {}
    ignored = []
    for key, value in parser["app:main"].items():
        name = key.removeprefix("kinto.")
        if name in SIMPLE:
            target, read = SIMPLE[name]
            flat[target] = read(value)
        elif name == "includes":
            for include in value.split():
                if include in INCLUDES:
                    flat.update(INCLUDES[include])
                else:
                    ignored.append(f"{key}: {include}")
        elif found := PRINCIPALS.match(name):
            resource, permission = found.groups()
            flat[f"{resource}.{permission}_principals"] = value.split()
        elif key not in ("use", "multiauth.policies") and not key.startswith("multiauth.policy."):
            ignored.append(key)
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree, ignored


def main(argv: list[str]) -> int:
    tree, ignored = translate(argv[1])
    for key in ignored:
        print(f"kinto_ini: no kiln equivalent, left out: {key}", file=sys.stderr)
    json.dump(tree, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
