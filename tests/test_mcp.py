"""``cfn-mcp`` through the MCP SDK's own stdio client against a real cfnd: the tools
are listed with typed schemas, a loop runs through them, errors say what to fix."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.conftest import SHARED_REDIS
from tests.daemon_proc import BIN, CfndProcess
from tests.test_loop_integration import agent_types

pytestmark = pytest.mark.timeout(180)

EXPECTED_TOOLS = {
    "swarm_init", "swarm_list", "swarm_status", "swarm_scale", "swarm_destroy",
    "agent_create", "agent_list", "agent_terminate", "task_run", "task_status",
    "loop_start", "loop_status", "loop_list", "loop_follow_summary", "loop_approve",
    "loop_reject", "loop_apply", "cfn_status",
}  # fmt: skip


def server(socket: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFN_")}
    return StdioServerParameters(
        command=str(BIN / "cfn-mcp"), args=["--socket", str(socket), "--timeout", "30"], env=env
    )


def data(result: Any) -> dict[str, Any]:
    """A tool's reply as data (its structured content, else its JSON text)."""
    assert not result.is_error, result.content
    if result.structured_content is not None:
        doc = result.structured_content
        return doc.get("result", doc) if set(doc) == {"result"} else doc  # type: ignore[no-any-return]
    return json.loads(result.content[0].text)  # type: ignore[no-any-return]


@pytest.fixture
def loop_cfnd(cfnd_factory: Callable[..., CfndProcess], short_tmp: Path) -> CfndProcess:
    config = short_tmp / "cfnd.toml"
    config.write_text(agent_types({"EXAMPLE_CONFIDENCE": "0.9"}, {}))
    return cfnd_factory("--redis-url", SHARED_REDIS, "--config", str(config))


async def test_tools_are_listed_and_a_loop_runs_through_them(loop_cfnd: CfndProcess) -> None:
    async with (
        stdio_client(server(loop_cfnd.socket)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) >= EXPECTED_TOOLS
        init_schema = tools["swarm_init"].input_schema
        assert set(init_schema["required"]) == {"topology", "max_agents"}
        assert init_schema["properties"]["max_agents"]["maximum"] == 50
        assert "mesh" in json.dumps(init_schema["properties"]["topology"])
        assert tools["loop_start"].input_schema["required"] == ["task"]

        swarm = data(await session.call_tool("swarm_init", {"topology": "mesh", "max_agents": 8}))
        assert swarm["topology"] == "mesh"
        run = data(
            await session.call_tool(
                "loop_start",
                {
                    "task": "add a health endpoint",
                    "implementers": ["impl", "impl"],
                    "validators": ["check", "check"],
                },
            )
        )
        assert run["status"] in ("new", "loop3")
        summary = data(
            await session.call_tool("loop_follow_summary", {"run": run["id"], "wait_s": 150})
        )
        assert summary["status"] == "done"
        assert summary["decision"] == "PROCEED"
        assert summary["at_rest"] is True
        assert summary["last_round"]["status"] == "passed"
        full = data(await session.call_tool("loop_status", {"run": run["id"]}))
        assert full["decision"] == "PROCEED"
        assert len(full["validators"]) == 2
        listed = data(await session.call_tool("agent_list", {}))
        assert listed["agents"]
        status = data(await session.call_tool("cfn_status", {}))
        assert "swarms" in status


async def test_errors_say_what_to_fix(loop_cfnd: CfndProcess, short_tmp: Path) -> None:
    async with (
        stdio_client(server(loop_cfnd.socket)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        missing = await session.call_tool("loop_status", {"run": "no-such-run"})
        assert missing.is_error
        text = missing.content[0].text
        assert "error[not_found]" in text
        assert "what to do:" in text
        bad = await session.call_tool("swarm_init", {"topology": "mesh", "max_agents": 99})
        assert bad.is_error
        assert "max_agents" in bad.content[0].text
    # cfnd not there: the error says to start it.
    async with (
        stdio_client(server(short_tmp / "nothing.sock")) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        down = await session.call_tool("swarm_list", {})
        assert down.is_error
        assert "error[daemon_unreachable]" in down.content[0].text
        assert "start cfnd" in down.content[0].text
