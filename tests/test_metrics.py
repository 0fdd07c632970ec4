"""Prometheus /metrics of a real cfnd after a real CFN run, read with curl.

One cfnd process for the module, its exporter on a free loopback port (port 0); the
run's agents are real cfn-agent processes running the example implementer and
validator (tests/cli_support.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cfn_client.api import Client
from cfn_daemon.api.metrics import FAMILIES
from tests.cli_support import AGENT_TYPES, new_swarm_name, own_cfnd, run
from tests.daemon_proc import CfndProcess

METRICS_CONF = '[metrics]\nlisten = "127.0.0.1:0"\npoll_interval_s = 0.2\n\n'


@pytest.fixture(scope="module")
def cfnd() -> Iterator[CfndProcess]:
    with own_cfnd("cfnm-", config=METRICS_CONF + AGENT_TYPES) as proc:
        yield proc


def metrics_url(cfnd: CfndProcess) -> str:
    code, out, err = run(cfnd.socket, "--json", "status")
    assert code == 0, err
    url = json.loads(out)["metrics_url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    assert not url.endswith(":9464/metrics")  # port 0 picked a free one
    return str(url)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """curl the exporter; every sample by (name, sorted labels)."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-D", "-", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    head, _, body = out.partition("\n\n")  # text mode turned CRLF into LF
    assert head.startswith("HTTP/1.0 200") and "text/plain; version=0.0.4" in head
    samples = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_a_cfn_run_show_its_counters(cfnd: CfndProcess) -> None:
    url = metrics_url(cfnd)
    name = new_swarm_name()
    with Client(cfnd.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name=name)
        cfn.agent_create("shell", swarm=name)
        ok = cfn.task_submit("echo hi", swarm=name)
        bad = cfn.task_submit("exit 3", swarm=name, max_attempts=2)
        cfn.task_wait([ok.id, bad.id], swarm=name, timeout_s=50)
        started = cfn.loop_start(
            "add a flag", swarm=name, implementers=["impl"], validators=["check"]
        )
    code, _, err = run(cfnd.socket, "--swarm", name, "loop", "follow", started.id)
    assert code == 0, err
    samples = scrape(url)
    # requests by op and outcome, with latency
    assert value(samples, "cfn_requests_total", op="task.submit", outcome="ok") == 2
    assert value(samples, "cfn_requests_total", op="loop.start", outcome="ok") == 1
    assert value(samples, "cfn_request_duration_seconds_count", op="task.submit") == 2
    # tasks done / failed / retried / dead-lettered, and durations by type
    assert value(samples, "cfn_tasks_done_total", swarm=name) >= 3  # echo + impl + check
    assert value(samples, "cfn_tasks_failed_total", swarm=name) == 2
    assert value(samples, "cfn_tasks_retried_total", swarm=name) == 1
    assert value(samples, "cfn_tasks_dead_lettered_total", swarm=name) == 1
    assert value(samples, "cfn_task_duration_seconds_count", swarm=name, type="shell") == 3
    assert (
        value(samples, "cfn_task_duration_seconds_bucket", swarm=name, type="shell", le="+Inf") == 3
    )
    # the run: a consensus round that passed, with its score, and the outcome
    assert value(samples, "cfn_consensus_rounds_total", status="passed") >= 1
    assert value(samples, "cfn_consensus_score_count") >= 1
    assert value(samples, "cfn_loop_outcomes_total", status="done") == 1
    # gauges: swarms and agents by status, queue depth per priority, Redis, event loop
    assert value(samples, "cfn_swarms", status="active") >= 1
    assert (
        sum(v for (n, lab), v in samples.items() if n == "cfn_agents" and ("swarm", name) in lab)
        >= 3
    )
    assert ("cfn_queue_depth", (("priority", "normal"), ("swarm", name))) in samples
    assert value(samples, "cfn_redis_up") == 1
    assert 0 < value(samples, "cfn_redis_rtt_seconds") < 2
    assert ("cfn_event_loop_lag_seconds", ()) in samples
    with Client(cfnd.socket, timeout_s=60) as cfn:
        cfn.swarm_destroy(name, force=True)


def test_every_family_is_exported_and_other_paths_are_404(cfnd: CfndProcess) -> None:
    url = metrics_url(cfnd)
    body = subprocess.run(["curl", "-sS", url], capture_output=True, text=True, check=True).stdout
    exported = {f.name for f in text_string_to_metric_families(body)}
    assert set(FAMILIES) <= exported, set(FAMILIES) - exported
    other = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url.replace("/metrics", "/x")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert other == "404"


def test_a_taken_port_leaves_cfnd_running_without_metrics(cfnd: CfndProcess) -> None:
    port = metrics_url(cfnd).rsplit(":", 1)[1].split("/")[0]
    conf = f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
    with own_cfnd("cfnm-", config=conf) as proc:
        code, out, _ = run(proc.socket, "--json", "status")
        doc = json.loads(out)
        assert (code, doc["metrics_url"]) == (0, None)
        assert f"cannot listen on 127.0.0.1:{port}" in doc["metrics_error"]
        assert "metrics_listen_failed" in proc.log()


def test_cfnctl_metrics_shows_an_agents_executions(cfnd: CfndProcess) -> None:
    name = new_swarm_name()
    with Client(cfnd.socket, timeout_s=60) as cfn:
        cfn.swarm_init("mesh", 8, name=name)
        (agent,) = cfn.agent_create("shell", swarm=name).agents
        ids = [cfn.task_submit(t, swarm=name, max_attempts=1).id for t in ("true", "true", "false")]
        cfn.task_wait(ids, swarm=name, timeout_s=50)
    try:
        code, out, err = run(cfnd.socket, "--swarm", name, "metrics", "--agent", agent.id,
                             "--format", "json")  # fmt: skip
        assert code == 0, err
        (perf,) = json.loads(out)["agents"]
        assert (perf["agent"], perf["executions"], perf["successes"]) == (agent.id, 3, 2)
        assert perf["success_rate"] == round(2 / 3, 4)
        assert (
            perf["min_ms"] <= perf["mean_ms"] <= perf["max_ms"] and perf["p95_ms"] == perf["max_ms"]
        )
        assert perf["by_type"]["shell"]["executions"] == 3
        assert {e["task"] for e in perf["recent"]} == set(ids)
        code, out, _ = run(cfnd.socket, "--swarm", name, "metrics")
        assert code == 0 and out.split()[:2] == ["SWARM", "AGENT"] and agent.id in out
        code, out, _ = run(cfnd.socket, "--swarm", name, "metrics", "--format", "prom")
        assert f'cfn_agent_executions{{swarm="{name}",agent="{agent.id}"}} 3' in out
    finally:
        with Client(cfnd.socket, timeout_s=60) as cfn:
            cfn.swarm_destroy(name, force=True)
