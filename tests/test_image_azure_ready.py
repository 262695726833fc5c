"""The azure profile's Ready report, against a local HTTP server speaking the
WireServer's goal-state and health endpoints."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aicert.agent import azure_ready
from aicert.verifier.errors import FormatError, ToolError

GOAL_STATE = b"""<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Version>2012-11-30</Version>
  <Incarnation>3</Incarnation>
  <Machine><ExpectedState>Started</ExpectedState></Machine>
  <Container>
    <ContainerId>c0ffee00-1111-2222-3333-444455556666</ContainerId>
    <RoleInstanceList>
      <RoleInstance><InstanceId>role-instance-7&amp;x</InstanceId></RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
"""


class _WireServer(BaseHTTPRequestHandler):
    posted: list[tuple[Message, bytes]]
    fail_goal_state = 0

    def do_GET(self) -> None:
        if self.path != "/machine/?comp=goalstate" or self.headers["x-ms-version"] != "2012-11-30":
            self.send_error(400)
            return
        if _WireServer.fail_goal_state:
            _WireServer.fail_goal_state -= 1
            self.send_error(503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(GOAL_STATE)))
        self.end_headers()
        self.wfile.write(GOAL_STATE)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/machine?comp=health":
            self.send_error(404)
            return
        _WireServer.posted.append((self.headers, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def wireserver() -> Iterator[str]:
    _WireServer.posted = []
    _WireServer.fail_goal_state = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WireServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_reports_ready_with_goal_state_ids(wireserver: str) -> None:
    goal = azure_ready.report_ready(wireserver)
    assert goal == azure_ready.GoalState(
        "3", "c0ffee00-1111-2222-3333-444455556666", "role-instance-7&x"
    )
    ((headers, body),) = _WireServer.posted
    assert headers["x-ms-version"] == "2012-11-30"
    assert headers["Content-Type"] == "text/xml;charset=utf-8"
    assert b"<GoalStateIncarnation>3</GoalStateIncarnation>" in body
    assert b"<InstanceId>role-instance-7&amp;x</InstanceId>" in body
    assert b"<State>Ready</State>" in body
    assert azure_ready.parse_goal_state(GOAL_STATE) == goal


def test_retries_until_wireserver_answers(wireserver: str) -> None:
    _WireServer.fail_goal_state = 2
    goal = azure_ready.report_ready_with_retries(wireserver, attempts=3, delay=0)
    assert goal.incarnation == "3"
    assert len(_WireServer.posted) == 1


def test_gives_up_with_one_line_error(wireserver: str) -> None:
    _WireServer.fail_goal_state = 5
    with pytest.raises(ToolError, match="WireServer answered 503"):
        azure_ready.report_ready_with_retries(wireserver, attempts=2, delay=0)
    assert azure_ready.main(["--wireserver", "http://127.0.0.1:9", "--attempts", "1"]) == 4


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"<GoalState", "not XML"),
        (b"<GoalState><Incarnation>1</Incarnation></GoalState>", "lacks Container/ContainerId"),
    ],
)
def test_bad_goal_state_is_format_error(xml: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        azure_ready.parse_goal_state(xml)
