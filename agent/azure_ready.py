"""Report "Ready" to the Azure WireServer, as waagent or cloud-init would.

Without this report Azure considers the VM's provisioning unfinished and fails it
after a timeout. The protocol: GET the goal state
(``/machine/?comp=goalstate``) for the incarnation, container id and role
instance id, then POST a Health document with ``<State>Ready</State>`` to
``/machine?comp=health``. Runs once at boot (aicert-azure-ready.service, azure
profile only), retrying while the network comes up. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from xml.etree import ElementTree

from aicert.verifier.errors import AicertError, FormatError, ToolError

WIRESERVER = "http://168.63.129.16"
PROTOCOL_VERSION = "2012-11-30"
MAX_DOCUMENT = 1 << 20


@dataclass(frozen=True)
class GoalState:
    incarnation: str
    container_id: str
    instance_id: str


def parse_goal_state(xml: bytes) -> GoalState:
    try:
        root = ElementTree.fromstring(xml)  # noqa: S314 - WireServer is link-local; expat limits entities
    except ElementTree.ParseError as exc:
        raise FormatError(f"WireServer goal state is not XML: {exc}") from exc

    def text(path: str) -> str:
        node = root.find(path)
        if node is None or not (node.text or "").strip():
            raise FormatError(f"WireServer goal state lacks {path}")
        return (node.text or "").strip()

    return GoalState(
        incarnation=text("Incarnation"),
        container_id=text("Container/ContainerId"),
        instance_id=text("Container/RoleInstanceList/RoleInstance/InstanceId"),
    )


def health_document(goal: GoalState) -> bytes:
    def esc(value: str) -> str:
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        f"<GoalStateIncarnation>{esc(goal.incarnation)}</GoalStateIncarnation>"
        f"<Container><ContainerId>{esc(goal.container_id)}</ContainerId>"
        "<RoleInstanceList><Role>"
        f"<InstanceId>{esc(goal.instance_id)}</InstanceId>"
        "<Health><State>Ready</State></Health>"
        "</Role></RoleInstanceList></Container></Health>"
    ).encode()


def _request(url: str, data: bytes | None, timeout: float) -> bytes:
    headers = {"x-ms-version": PROTOCOL_VERSION, "x-ms-agent-name": "aicert"}
    if data is not None:
        headers["Content-Type"] = "text/xml;charset=utf-8"
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - fixed http URL
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body: bytes = response.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:
        raise ToolError(f"WireServer answered {exc.code} to {url}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ToolError(f"cannot reach the WireServer at {url}: {exc}") from exc
    if len(body) > MAX_DOCUMENT:
        raise FormatError(f"WireServer answer from {url} is larger than {MAX_DOCUMENT} bytes")
    return body


def report_ready(base: str = WIRESERVER, timeout: float = 10.0) -> GoalState:
    """One attempt: fetch the goal state, post Ready; raise an AicertError on failure."""
    goal = parse_goal_state(_request(f"{base}/machine/?comp=goalstate", None, timeout))
    _request(f"{base}/machine?comp=health", health_document(goal), timeout)
    return goal


def report_ready_with_retries(
    base: str = WIRESERVER, *, attempts: int = 60, delay: float = 5.0
) -> GoalState:
    """Retry while the network comes up (DHCP under Hyper-V can take a while)."""
    for attempt in range(1, attempts + 1):
        try:
            return report_ready(base)
        except AicertError as exc:
            if attempt == attempts:
                raise
            print(f"aicert-azure-ready: attempt {attempt} failed: {exc.message}", file=sys.stderr)
            time.sleep(delay)
    raise ToolError("no attempts made")  # pragma: no cover - attempts >= 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aicert-azure-ready", description=__doc__)
    parser.add_argument("--wireserver", default=WIRESERVER)
    parser.add_argument("--attempts", type=int, default=60)
    args = parser.parse_args(argv)
    try:
        goal = report_ready_with_retries(args.wireserver, attempts=max(1, args.attempts))
    except AicertError as exc:
        print(f"aicert-azure-ready: {exc.message}", file=sys.stderr)
        return exc.exit_code
    print(f"aicert-azure-ready: reported Ready (incarnation {goal.incarnation})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
