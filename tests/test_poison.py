"""Poison input: refused at the wire with a specific error naming the field, and what
gets past the wire anyway (another writer, an old cfnd) fails as a task while the agent
that picked it up lives on."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog.testing

from cfn_client.api import AsyncClient
from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.protocol import LENGTH_PREFIX, MAX_NESTING_DEPTH
from cfn_daemon.app import Daemon
from tests.conftest import DaemonFactory
from tests.test_server import RawClient

FAKE_CLAUDE = Path(__file__).parent / "agents" / "fake_claude.py"
APPROVE = '{"vote": "approve", "confidence": 0.95, "output": "fine"}'
FAST = {
    "agents.heartbeat_interval_s": 0.2,
    "agents.lapse_s": 3.0,
    "tasks.retry_base_s": 0.05,
    "agents.restart_backoff_s": 0.05,
}


@pytest.fixture
async def raw(daemon: Daemon) -> Any:
    client = await RawClient.open(daemon.socket_path)
    yield client
    await client.close()


def _msgpack(obj: Any) -> bytes:
    body = msgspec.msgpack.encode(obj)
    return LENGTH_PREFIX.pack(len(body)) + body


@pytest.mark.parametrize(
    ("args", "field", "fragment"),
    [
        ({"text": "echo a\x00b"}, "args.text", "NUL"),
        ({"text": "echo", "timeout_s": math.nan}, "args.timeout_s", "finite"),
        ({"text": "echo", "timeout_s": math.inf}, "args.timeout_s", "finite"),
        ({"text": "echo", "timeout_s": -math.inf}, "args.timeout_s", "finite"),
        ({"text": "echo", "type": "sh\x00ell"}, "args.type", "NUL"),
    ],
)
async def test_poison_submit_is_refused_naming_the_field(
    raw: RawClient, args: dict[str, Any], field: str, fragment: str
) -> None:
    assert (await raw.call("swarm.init", topology="mesh", max_agents=2))["ok"]
    with structlog.testing.capture_logs() as logs:
        await raw.send_raw(_msgpack({"id": 7, "op": "task.submit", "args": args}))
        reply = await raw.recv()
    assert reply is not None and reply["id"] == 7
    assert reply["error"]["code"] == "invalid_args", reply
    assert reply["error"]["details"]["field"] == field
    assert field in reply["error"]["message"] and fragment in reply["error"]["message"]
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")]
    assert (await raw.call("task.list"))["result"]["tasks"] == []  # nothing was queued


async def test_json_overflowing_float_is_refused(raw: RawClient) -> None:
    await raw.send_raw(b'{"id":1,"op":"task.wait","args":{"timeout_s":1e999}}\n')
    reply = await raw.recv()
    assert reply is not None and reply["error"]["code"] == "invalid_frame"
    assert "out of range" in reply["error"]["message"]


@pytest.mark.parametrize("framing", ["json", "msgpack"])
@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH + 1, 1_000, 100_000])
async def test_deep_nesting_gets_a_specific_error_and_no_traceback(
    raw: RawClient, framing: str, depth: int
) -> None:
    if framing == "json":
        frame = b'{"id":3,"op":"ping","args":{"x":' + b"[" * depth + b"]" * depth + b"}}\n"
    else:
        # msgpack: a fixarray of one element, `depth` times, around an empty array.
        body = b"\x83\xa2id\x03\xa2op\xa4ping\xa4args\x81\xa1x" + b"\x91" * depth + b"\x90"
        frame = LENGTH_PREFIX.pack(len(body)) + body
    with structlog.testing.capture_logs() as logs:
        await raw.send_raw(frame)
        reply = await raw.recv()
    assert reply is not None
    assert reply["error"]["code"] == "invalid_frame", reply
    assert "nested" in reply["error"]["message"]
    assert str(MAX_NESTING_DEPTH) in reply["error"]["message"]
    assert not [e for e in logs if "exc_info" in e or e.get("log_level") == "error"]
    assert (await raw.call("ping", framing))["ok"]  # the connection is kept


async def test_nesting_within_the_limit_is_fine(raw: RawClient) -> None:
    depth = MAX_NESTING_DEPTH - 3  # the envelope and args take three levels
    nested: Any = []
    for _ in range(depth):
        nested = [nested]
    await raw.send_raw(_msgpack({"id": 2, "op": "ping", "args": {"x": nested}}))
    reply = await raw.recv()
    assert reply is not None and reply["error"]["code"] == "invalid_args"  # unknown field
    assert "nested" not in reply["error"]["message"]


async def test_client_refuses_nul_and_nan_before_sending(daemon: Daemon) -> None:
    async with AsyncClient(daemon.socket_path, timeout_s=30) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2)
        with pytest.raises(InvalidArgs, match="NUL"):
            await cfn.call("task.submit", text="a\x00b")
        with pytest.raises(InvalidArgs, match="finite"):
            await cfn.call("task.submit", text="echo", timeout_s=math.nan)


async def test_max_attempts_zero_is_refused_not_defaulted(daemon: Daemon) -> None:
    async with AsyncClient(daemon.socket_path, timeout_s=30) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=2)
        with pytest.raises(InvalidArgs, match=r"max_attempts 0: expected 1\.\.100"):
            await cfn.call("task.submit", text="echo", max_attempts=0)
        assert (await cfn.call("task.list")).tasks == []
        for key in ("max_loop2", "max_loop3"):
            refused = rf"`{key}` must be an integer in 1\.\.100, got 0"
            with pytest.raises(InvalidArgs, match=refused):
                await cfn.call("loop.start", task="do it", **{key: 0})
        assert (await cfn.call("loop.list")).runs == []


async def test_poison_tasks_past_the_wire_fail_and_the_agent_lives_on(
    daemon_factory: DaemonFactory,
) -> None:
    d = await daemon_factory(**FAST)
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        info = await cfn.call("swarm.init", topology="mesh", max_agents=2, name="p")
        await cfn.call("agent.create", type="shell")
        agents = (await cfn.call("agent.list")).agents
        assert len(agents) == 1
        agent = agents[0]
        # Straight into Redis, as another writer could: the agent must cope.
        poison = [
            await d.swarms.tasks.submit(info.id, text="echo a\x00b", type="shell", max_attempts=2),
            await d.swarms.tasks.submit(
                info.id, text="echo nan", type="shell", timeout_s=math.nan, max_attempts=2
            ),
            await d.swarms.tasks.submit(
                info.id, text="echo inf", type="shell", timeout_s=math.inf, max_attempts=2
            ),
        ]
        good = await cfn.call("task.submit", text="echo fine")
        done = (
            await cfn.call("task.wait", tasks=[t.id for t in poison] + [good.id], timeout_s=60)
        ).tasks
        by_id = {t.id: t for t in done}
        for t in poison:
            assert by_id[t.id].status == "failed", by_id[t.id]
            assert by_id[t.id].result is not None and by_id[t.id].result.error
        assert "NUL" in (by_id[poison[0].id].result.error or "")
        assert by_id[good.id].status == "succeeded"
        after = (await cfn.call("agent.list")).agents
        assert [(a.id, a.pid) for a in after] == [(agent.id, agent.pid)]
        agent_events = (await cfn.call("events.list", types=["agent"])).events
        assert {e.type for e in agent_events} <= {"agent.spawned", "agent.registered"}
        assert {e.data.get("agent") for e in agent_events} == {agent.id}


async def test_implementer_output_with_nul_does_not_break_claude_validators(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    impl = tmp_path / "nul_impl.py"
    impl.write_text(
        "import json, sys\njson.load(sys.stdin)\n"
        'print(json.dumps({"output": "made it\\u0000with a NUL", "confidence": 0.9}))\n'
    )
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"match": "Review", "result": APPROVE}]))
    log = tmp_path / "claude.log"
    config = (
        f'[agent_types.impl]\nkind = "command"\nexec = ["{sys.executable}", "{impl}"]\n'
        'role = "implementer"\n\n'
        f'[agent_types.reviewer]\nkind = "claude"\nbinary = "{FAKE_CLAUDE}"\n'
        f'role = "validator"\nenv = {{ FAKE_CLAUDE_RULES = "{rules}", '
        f'FAKE_CLAUDE_LOG = "{log}" }}\n'
    )
    d = await daemon_factory(config_text=config, **FAST)
    async with AsyncClient(d.socket_path, timeout_s=120) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=8, name="nul")
        info = await cfn.call(
            "loop.start", task="make it", implementers=["impl"], validators=["reviewer"] * 4
        )
        async with cfn.stream("loop.follow", {"run": info.id}) as events:
            async for _ in events:
                pass
        info = await cfn.call("loop.status", run=info.id)
        assert info.status == "done", info
        assert info.rounds[0]["votes_counted"] == 4
        prompts = [json.loads(line)["prompt"] for line in log.read_text().splitlines()]
        assert len(prompts) == 4
        assert all("made it" in p and "\x00" not in p for p in prompts)
        agent_events = (await cfn.call("events.list", types=["agent"])).events
        assert not [e for e in agent_events if e.type not in ("agent.spawned", "agent.registered")]
