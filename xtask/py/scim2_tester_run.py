"""Runs scim2-tester (PyPI) against a SCIM base URL; `cargo xtask test` calls it.

Usage: scim2_tester_run.py <SCIM base URL> (the SCIM credential in SCIM_TOKEN)

Prints one line per check (status, title, reason) and exits non-zero when a check that
applies to what the server publishes did not pass. Checks of features the server says it
does not offer are skipped by scim2-tester itself (it reads the ServiceProviderConfig).

The resource checks run for User only: Tessera's groups are its fixed roles (see
ARCHITECTURE.md, "SCIM provisioning"), which are never created or deleted, and every
Group check of scim2-tester starts by creating a group. The discovery checks cover both.
"""

import os
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


def main() -> int:
    base = sys.argv[1]
    token = os.environ["SCIM_TOKEN"]
    http = Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20)
    client = SyncSCIMClient(http)
    results = check_server(client, resource_types=["User"])
    failed = 0
    counts: dict[str, int] = {}
    for r in results:
        status = r.status.name
        counts[status] = counts.get(status, 0) + 1
        line = f"{status:8} {r.title}"
        if r.reason:
            line += f": {r.reason}"
        print(line)
        if r.status in (Status.ERROR, Status.CRITICAL):
            failed += 1
    print("scim2-tester: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
