"""The web console in a real browser (Debian's chromium driven by Playwright) against a
real in-process cfnd running real cfn-agent processes with the example agents.

``CFN_WEB_SCREENSHOTS=DIR`` also saves screenshots of the overview and a run page at
1280x800 and at phone width there (``scripts/screenshots`` writes them to docs/).
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cfn_client.api import AsyncClient
from cfn_daemon.app import Daemon
from tests.conftest import DaemonFactory

playwright_api = pytest.importorskip("playwright.async_api")
expect = playwright_api.expect
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (scripts/bootstrap installs it)"
)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "agents"
WEB = {"web.enabled": True, "web.listen": "127.0.0.1:0"}
# Quick to stop; but a generous heartbeat lapse: chromium and other tests share two
# cores, and a validator declared hung would stall the round the test watches.
FAST = {"agents.lapse_s": 30.0, "agents.stop_grace_s": 1.0}
WAIT_MS = 60_000  # generous: two shared cores, several agent processes
SHOTS = os.environ.get("CFN_WEB_SCREENSHOTS")

# A validator that waits for a file before voting (bounded), so the test decides when
# Loop 2 happens: the run page is open before any vote exists.
GATED_VALIDATOR = """\
import os, runpy, sys, time
gate = os.environ["WEB_TEST_GATE"]
for _ in range(1200):
    if os.path.exists(gate):
        break
    time.sleep(0.05)
sys.argv = [{validator!r}]
runpy.run_path({validator!r}, run_name="__main__")
"""


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            await b.close()


def agent_types(tmp: Path) -> str:
    wrapper = tmp / "gated_validator.py"
    wrapper.write_text(GATED_VALIDATOR.format(validator=str(EXAMPLES / "validator.py")))
    gate = tmp / "votes-may-start"
    return (
        f'[agent_types.impl]\nkind = "command"\n'
        f'exec = ["{sys.executable}", "{EXAMPLES / "implementer.py"}"]\n'
        f'env = {{ EXAMPLE_CONFIDENCE = "0.9", EXAMPLE_LOG = "{tmp / "impl.jsonl"}" }}\n'
        f'[agent_types.check]\nkind = "command"\nrole = "validator"\n'
        f'exec = ["{sys.executable}", "{wrapper}"]\n'
        f'env = {{ WEB_TEST_GATE = "{gate}", EXAMPLE_APPROVE_FROM_ROUND = "0", '
        f'EXAMPLE_ISSUE = "input validation is missing" }}\n'
    )


async def login(cfn: AsyncClient, browser: object, role: str | None = None) -> object:
    """A fresh browser context logged in through a `cfnctl web` link."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    page = await ctx.new_page()
    link = await cfn.web_login(role=role)
    resp = await page.goto(link.url)
    assert resp is not None and resp.status == 200
    assert urllib.parse.urlparse(page.url).path == "/"  # the token left the address bar
    return page


async def shoot(page: object, name: str) -> None:
    if not SHOTS:
        return
    out = Path(SHOTS)
    out.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(out / f"web-{name}.png"), full_page=True)  # type: ignore[attr-defined]
    await page.set_viewport_size({"width": 390, "height": 844})  # type: ignore[attr-defined]
    await page.screenshot(path=str(out / f"web-{name}-phone.png"), full_page=True)  # type: ignore[attr-defined]
    await page.set_viewport_size({"width": 1280, "height": 800})  # type: ignore[attr-defined]


async def test_without_a_session_everything_is_401_and_a_token_works_once(
    daemon_factory: DaemonFactory, browser: object
) -> None:
    d: Daemon = await daemon_factory(**WEB)
    assert d.web is not None
    base = d.web.base_url
    async with AsyncClient(d.socket_path) as cfn:
        await cfn.call("swarm.init", topology="star", max_agents=4, name="web1")
        anon = await browser.new_context()  # type: ignore[attr-defined]
        paths = ("/", "/inbox", "/swarms/web1", "/live/overview", "/swarms/web1/tasks", "/nope")
        for path in paths:
            resp = await anon.request.get(base + path)
            assert resp.status == 401, path
        resp = await anon.request.post(base + "/swarms/web1/dlq/requeue", form={"csrf": "x"})
        assert resp.status == 401
        page = await login(cfn, browser)
        assert await page.inner_text("h1") == "Overview"
        assert await page.locator("#swarm-web1").count() == 1
        # The overview follows the swarm live: a task runs, its count changes in place.
        await page.evaluate("window.__sameDocument = true")
        await cfn.call("agent.create", type="shell", count=3)
        task = await cfn.call("task.submit", text="echo hello-from-the-web")
        await cfn.call("task.wait", tasks=[task.id], timeout_s=60)
        await expect(page.locator("#swarm-web1")).to_contain_text("1 succeeded", timeout=WAIT_MS)
        assert await page.evaluate("window.__sameDocument") is True
        # The swarm, tasks, task and agent pages.
        await page.goto(f"{base}/swarms/web1")
        assert await page.locator("svg.topology g.node").count() == 3
        assert "Hub:" in await page.inner_text("figcaption")
        # The hub stops: live, it is crossed out, the next member becomes the hub and
        # the repaired link is dashed.
        hub = await page.locator("figcaption strong").first.inner_text()
        await page.evaluate("window.__sameDocument = true")
        await cfn.call("agent.terminate", agent=hub, force=True)
        dead = page.locator("svg.topology g.node.dead")
        await expect(dead).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("svg.topology line.edge.repaired")).to_have_count(1)
        assert await page.locator("figcaption strong").first.inner_text() != hub
        assert await page.evaluate("window.__sameDocument") is True
        await shoot(page, "swarm")
        await page.goto(f"{base}/swarms/web1/tasks?status=succeeded")
        assert await page.locator(f"a[href='/swarms/web1/tasks/{task.id}']").count() == 1
        await page.goto(f"{base}/swarms/web1/tasks?status=failed")
        assert await page.locator(f"a[href='/swarms/web1/tasks/{task.id}']").count() == 0
        await page.goto(f"{base}/swarms/web1/tasks/{task.id}")
        assert "hello-from-the-web" in await page.inner_text("main")
        assert await page.get_by_role("button", name="Retry").count() == 1
        done = await cfn.call("task.status", task=task.id)
        await page.goto(f"{base}/swarms/web1/agents/{done.result.agent}")
        assert "100 % of 1 recent" in await page.inner_text("main")
        assert await page.locator("pre.log").count() == 1
        assert await page.locator(f"a[href='/swarms/web1/tasks/{task.id}']").count() == 1
        # The link is spent: a second browser cannot use it.
        link = await cfn.web_login()
        await page.goto(link.url)
        again = await anon.new_page()
        resp = await again.goto(link.url)
        assert resp is not None and resp.status == 401
        # The cookie is HttpOnly and SameSite=Strict.
        (cookie,) = await page.context.cookies()
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        # With the session but without the CSRF token, or from another site: refused.
        resp = await page.context.request.post(base + "/swarms/web1/dlq/requeue", form={})
        assert resp.status == 403
        resp = await page.context.request.post(
            base + "/swarms/web1/dlq/requeue",
            form={"csrf": "guess"},
            headers={"Origin": "http://evil.example"},
        )
        assert resp.status == 403


@pytest.mark.timeout(240)
async def test_run_timeline_fills_live_and_an_escalation_is_answered_from_the_inbox(
    daemon_factory: DaemonFactory, browser: object, short_tmp: Path
) -> None:
    d: Daemon = await daemon_factory(config_text=agent_types(short_tmp), **WEB, **FAST)
    assert d.web is not None
    async with AsyncClient(d.socket_path, timeout_s=60) as cfn:
        await cfn.call("swarm.init", topology="mesh", max_agents=6, name="web2")
        page = await login(cfn, browser)
        run = await cfn.call(
            "loop.start",
            task="add input validation to the signup form",
            implementers=["impl"],
            validators=["check", "check", "check"],
            max_loop2=1,
        )
        await page.goto(f"{d.web.base_url}/swarms/web2/runs/{run.id}")
        await page.wait_for_selector('[data-type="loop.started"]')
        assert await page.locator('[data-type="loop.vote"]').count() == 0
        await page.evaluate("window.__sameDocument = true")
        # A viewer's inbox is open before anything escalates.
        viewer = await login(cfn, browser, role="viewer")
        await viewer.goto(f"{d.web.base_url}/inbox")
        assert "No run is waiting" in await viewer.inner_text("#inbox")
        (short_tmp / "votes-may-start").touch()
        # Loop 3's gate, the three votes, the consensus round and the escalation arrive
        # over SSE: the same document, never reloaded.
        await page.wait_for_selector('[data-type="loop.gate"]', timeout=WAIT_MS)
        await page.wait_for_selector('[data-type="loop.escalated"]', timeout=WAIT_MS)
        assert await page.evaluate("window.__sameDocument") is True
        assert await page.locator('[data-type="loop.vote"]').count() == 3
        round_entry = page.locator('[data-type="loop.round"]')
        assert "failed" in await round_entry.inner_text()
        assert "input validation is missing" in await round_entry.inner_text()
        # The status and the answer forms (operator) follow the entry: wait for them.
        await expect(page.locator("#run-status")).to_have_text("escalated", timeout=WAIT_MS)
        approve = page.locator("#run-actions button", has_text="Approve")
        await expect(approve).to_have_count(1, timeout=WAIT_MS)
        await shoot(page, "run")
        await page.goto(d.web.base_url + "/")
        assert await page.inner_text("#n-escalated") == "1"
        await shoot(page, "overview")
        await page.goto(f"{d.web.base_url}/swarms/web2/runs/{run.id}")

        # The viewer's inbox shows the escalation live, without action buttons, and the
        # viewer's forged POST is refused.
        await expect(viewer.locator(f"#esc-{run.id}")).to_have_count(1, timeout=WAIT_MS)
        assert await viewer.locator("button", has_text="Approve").count() == 0
        await viewer.goto(f"{d.web.base_url}/swarms/web2/runs/{run.id}")
        assert await viewer.locator("#run-actions button").count() == 0
        status = await viewer.evaluate(
            """async (url) => {
                const csrf = document.querySelector('input[name=csrf]').value;
                const r = await fetch(url, {method: 'POST', body: new URLSearchParams({csrf})});
                return r.status;
            }""",
            f"/swarms/web2/runs/{run.id}/approve",
        )
        assert status == 403
        assert (await cfn.call("loop.status", run=run.id)).status == "escalated"

        # The operator rejects with feedback on the run page: a new round runs (the
        # validators still reject) and the run escalates again.
        await page.get_by_label("Feedback for the next round").fill("validate with a schema")
        await page.get_by_role("button", name="Reject with feedback").click()
        await expect(page.locator('[data-type="loop.round"]')).to_have_count(2, timeout=WAIT_MS)
        await expect(page.locator('[data-type="loop.escalated"]')).to_have_count(2)
        assert "rejected" in await page.locator('[data-type="loop.human"]').inner_text()
        assert (await cfn.call("loop.status", run=run.id)).loop2_round == 2
        # The implementer of round 2 was given the human's feedback.
        assert "validate with a schema" in (short_tmp / "impl.jsonl").read_text()
        # The operator approves from the inbox; the run finishes.
        await page.goto(f"{d.web.base_url}/inbox")
        card = page.locator(f"#esc-{run.id}")
        await card.get_by_label("Reason").fill("reviewed by hand")
        await card.get_by_role("button", name="Approve").click()
        await page.wait_for_selector("text=No run is waiting for a human.")
        done = await cfn.call("loop.status", run=run.id)
        assert done.status == "done" and done.decision == "PROCEED"
        await page.goto(f"{d.web.base_url}/swarms/web2/runs/{run.id}")
        assert await page.inner_text("#run-status") == "done"
        assert await page.locator('[data-type="loop.finished"]').count() == 1
