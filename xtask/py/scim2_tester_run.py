"""Runs scim2-tester (PyPI) against a SCIM base URL; `cargo xtask test` calls it.

Usage: scim2_tester_run.py <SCIM base URL> (the SCIM credential in SCIM_TOKEN)

Prints one line per check (status, title, reason) and exits non-zero when a check that
applies to what the server publishes did not pass. Checks of features the server says it
does not offer are skipped by scim2-tester itself (it reads the ServiceProviderConfig).

One deliberate deviation is expected, not failed: scim2-tester makes random users, and when
one is made with `active: false`, its check that removes `active` is refused, because an
unassigned `active` would read as enabled for a deprovisioned user (ARCHITECTURE.md,
"SCIM provisioning"). It is printed as EXPECTED.

The resource checks run for User only: Tessera's groups are its fixed roles (see
ARCHITECTURE.md, "SCIM provisioning"), which are never created or deleted, and every
Group check of scim2-tester starts by creating a group. The discovery checks cover both.
"""

import os
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server


# (check title, words of the server's refusal) of the deviation described above.
EXPECTED = [("check_remove_attribute", "active cannot be removed from a deprovisioned user")]


def expected(r) -> bool:
    return any(r.title == t and words in (r.reason or "") for t, words in EXPECTED)


def main() -> int:
    base = sys.argv[1]
    token = os.environ["SCIM_TOKEN"]
    http = Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=20)
    client = SyncSCIMClient(http)
    results = check_server(client, resource_types=["User"])
    failed = 0
    counts: dict[str, int] = {}
    for r in results:
        status = "EXPECTED" if expected(r) else r.status.name
        counts[status] = counts.get(status, 0) + 1
        line = f"{status:8} {r.title}"
        if r.reason:
            line += f": {r.reason}"
        print(line)
        if r.status in (Status.ERROR, Status.CRITICAL) and not expected(r):
            failed += 1
    print("scim2-tester: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
