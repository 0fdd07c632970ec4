"""Pure parts of the audit, alerts and Redis health (no sockets, no Redis): redaction,
the denial-burst window, what is audited and critical, and INFO thresholds."""

from __future__ import annotations

import json

import pytest

from cfn_client.wire.protocol import Role
from cfn_daemon.core.audit_rules import ARG_CHARS_MAX, ARGS_BYTES_MAX, audited, critical, entry_args
from cfn_daemon.core.denials import DenialWindow
from cfn_daemon.core.redact import REDACTED, redact, redact_text, secret_name
from cfn_daemon.core.redis_health import Thresholds, edges, evaluate, figures

# ---------------------------------------------------------------- redaction

SECRET_TEXTS = [
    "export ANTHROPIC_API_KEY=sk-ant-api03-Zx9fQ2mLkP7vRt4sWq8nYb3c",
    "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig123'",
    "git push https://ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8@github.com/x/y",
    "aws AKIAIOSFODNN7EXAMPLE",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----",
    "token " + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "blob aGVsbG8gd29ybGQhIFRoaXMgaXMgYSBzZWNyZXQga2V5Cg9xZ3KqZ7Wm",
    "run with password=hunter2hunter2",
    "mycli --token s3cr3tvalue",
    "redis://cfn:p4ssw0rd@127.0.0.1:6379/0",
]


@pytest.mark.parametrize("text", SECRET_TEXTS)
def test_secret_values_are_redacted_by_pattern(text: str) -> None:
    out = redact_text(text)
    assert REDACTED in out, out
    for secret in ("sk-ant", "eyJhbGci", "ghp_A1b2", "AKIAIOSF", "b3BlbnNz", "9f86d081",
                   "aGVsbG8g", "hunter2", "s3cr3t", "p4ssw0rd"):  # fmt: skip
        assert secret not in out, out


@pytest.mark.parametrize(
    "text",
    [
        "echo hello world",
        "the bearer of bad news",
        "basic functionality works",
        "cat /work/wt/audit/cfn_daemon/core/some_module_name.py",
        "task t1a2b3c4d5 in swarm t0123456789",
        "npm run build && npm test -- --coverage",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_redaction_by_key_name() -> None:
    args = {
        "swarm": "s1",
        "env": {"ANTHROPIC_API_KEY": "abc", "GITHUB_TOKEN": "x", "PATH": "/bin"},
        "password": "pw",
        "authToken": "t",
        "client_secret": "c",
        "password_file": "/etc/cfn/pw",  # names where a secret is, not the secret
        "nested": [{"private_key": "k"}, {"keyspace": 3}],
    }
    out = redact(args)
    assert out["swarm"] == "s1" and out["env"]["PATH"] == "/bin"
    assert out["env"]["ANTHROPIC_API_KEY"] == REDACTED and out["env"]["GITHUB_TOKEN"] == REDACTED
    assert out["password"] == out["authToken"] == out["client_secret"] == REDACTED
    assert out["password_file"] == "/etc/cfn/pw"
    assert out["nested"] == [{"private_key": REDACTED}, {"keyspace": 3}]
    assert args["password"] == "pw"  # a copy: the request's own args are untouched


def test_config_set_value_of_a_secret_setting_is_redacted() -> None:
    assert redact({"key": "llm.api_token", "value": "v"})["value"] == REDACTED
    # auth.* settings are who-may-do-what, not secrets: the audit keeps them.
    assert redact({"key": "auth.users", "value": '{"bob": "admin"}'})["value"] == (
        '{"bob": "admin"}'
    )


def test_secret_names() -> None:
    for name in ("password", "api_key", "OPENAI_API_KEY", "authToken", "x-auth", "credentials"):
        assert secret_name(name), name
    for name in ("key", "value", "author", "keyspace", "token_ttl_s", "password_file", "swarm"):
        assert not secret_name(name), name


# ---------------------------------------------------------------- audit rules


def test_what_is_audited() -> None:
    assert audited("swarm.destroy", Role.operator)
    assert audited("config.set", Role.admin)
    assert audited("web.login", Role.viewer)  # marked: it issues a login link
    assert not audited("task.list", Role.viewer)
    assert not audited("audit.search", Role.admin)  # a read (audited when denied)


def test_entry_args_are_redacted_bounded_json() -> None:
    text = entry_args({"text": "export OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuv", "n": 1})
    assert "sk-proj" not in text and json.loads(text)["n"] == 1
    big = entry_args({"text": "x" * 100_000, "items": ["y" * 600] * 100})
    assert len(big.encode()) <= ARGS_BYTES_MAX
    assert json.loads(big)  # still JSON


def test_critical_ops() -> None:
    assert critical("swarm.destroy", {"swarm": "s1"}) == ("swarm.destroyed", "swarm s1 destroyed")
    assert critical("config.set", {"key": "auth.default_role", "value": "viewer"}) is not None
    assert critical("config.set", {"key": "loop.max_rounds", "value": "3"}) is None
    assert critical("config.reset", {})[0] == "auth.changed"  # type: ignore[index]
    assert critical("team.assign", {"user": "u", "role": "r"})[0] == "auth.changed"  # type: ignore[index]
    assert critical("team.sync", {"dry_run": True}) is None
    assert critical("team.sync", {}) is not None
    assert critical("task.submit", {"text": "x"}) is None


# ---------------------------------------------------------------- denial bursts


def test_denial_burst_is_edge_triggered_per_uid() -> None:
    w = DenialWindow(burst=3, window_s=10.0)
    assert [w.hit(7, t) for t in (0.0, 1.0, 2.0)] == [False, False, True]
    assert [w.hit(7, t) for t in (3.0, 4.0)] == [False, False]  # same burst: one alert
    assert not w.hit(8, 4.0)  # per uid
    assert [w.hit(7, t) for t in (100.0, 101.0)] == [False, False]  # the burst ended
    assert w.hit(7, 102.0)  # a new one
    assert w.count(7, 102.0) == 3


def test_denials_outside_the_window_do_not_add_up() -> None:
    w = DenialWindow(burst=3, window_s=1.0)
    assert not any(w.hit(1, t) for t in (0.0, 2.0, 4.0, 6.0))


def test_denial_window_is_bounded() -> None:
    w = DenialWindow(burst=2, window_s=1.0, max_keys=5)
    for uid in range(100):
        w.hit(uid, 0.0)
    assert len(w._uids) == 5


# ---------------------------------------------------------------- Redis INFO


def _info(**over: dict[str, object]) -> dict[str, dict[str, object] | None]:
    base: dict[str, dict[str, object] | None] = {
        "server": {"redis_version": "7.0.15", "redis_mode": "standalone"},
        "memory": {"used_memory": 1000, "maxmemory": 0, "maxmemory_policy": "noeviction"},
        "stats": {"instantaneous_ops_per_sec": 5, "evicted_keys": 0, "keyspace_hits": 9,
                  "keyspace_misses": 1},
        "clients": {"connected_clients": 4},
        "persistence": {"aof_enabled": 1, "rdb_last_save_time": 1_700_000_000},
    }  # fmt: skip
    for section, values in over.items():
        base[section] = {**(base[section] or {}), **values}
    return base


def test_healthy_redis_has_no_problems() -> None:
    fig = figures(_info(), rdb_saves="3600 1")
    assert (fig.version, fig.mode, fig.memory_ratio, fig.aof_enabled) == (
        "7.0.15", "standalone", None, True,
    )  # fmt: skip
    assert fig.rdb_last_save_ms == 1_700_000_000_000 and fig.unchecked == []
    assert evaluate(fig, Thresholds(), evicted_before=0) == ([], [])


def test_each_threshold_raises_its_problem() -> None:
    fig = figures(
        _info(
            memory={"used_memory": 950, "maxmemory": 1000, "maxmemory_policy": "allkeys-lru"},
            stats={"evicted_keys": 12},
            clients={"connected_clients": 6000},
            persistence={"aof_enabled": 0},
        )
    )
    problems, unchecked = evaluate(fig, Thresholds(), evicted_before=2)
    kinds = {p.kind for p in problems}
    assert kinds == {
        "health.memory", "health.clients", "health.evictions", "health.aof_off",
        "health.eviction_policy",
    }  # fmt: skip
    assert unchecked == []
    evictions = next(p for p in problems if p.kind == "health.evictions")
    assert evictions.fields["evicted"] == 10
    # Settings that switch checks off.
    relaxed = Thresholds(require_aof=False, require_noeviction=False, evictions_max=100,
                         memory_ratio_max=0.99, connected_clients_max=10_000)  # fmt: skip
    assert evaluate(fig, relaxed, evicted_before=2) == ([], [])


def test_first_poll_has_no_eviction_delta() -> None:
    fig = figures(_info(stats={"evicted_keys": 500}))
    assert evaluate(fig, Thresholds(), evicted_before=None) == ([], [])


def test_what_cannot_be_read_is_listed_not_reported_as_off() -> None:
    info = _info()
    info["persistence"] = None
    info["memory"] = None
    fig = figures(info, rdb_saves=None, unchecked=["rdb saves: CONFIG GET refused or renamed"])
    assert fig.aof_enabled is None and fig.maxmemory_policy is None
    assert "INFO persistence: not readable" in fig.unchecked
    problems, unchecked = evaluate(fig, Thresholds(), evicted_before=0)
    assert problems == []
    assert "aof: INFO persistence not readable" in unchecked
    assert "eviction policy: INFO memory not readable" in unchecked


def test_edges_only_new_problems() -> None:
    fig = figures(_info(memory={"maxmemory_policy": "allkeys-lru"}))
    problems, _ = evaluate(fig, Thresholds(), evicted_before=0)
    raised, cleared = edges({}, problems)
    assert [p.kind for p in raised] == ["health.eviction_policy"] and cleared == []
    active = {p.kind: p for p in raised}
    assert edges(active, problems) == ([], [])  # still bad: no second alert
    assert edges(active, []) == ([], ["health.eviction_policy"])  # back to normal


def test_a_secret_across_the_cut_is_redacted_whole() -> None:
    secret = "sk-ant-api03-" + "Qm9vQmFy" * 8
    text = "a " * (ARG_CHARS_MAX // 2 - 4) + secret + " after" * 200  # starts just before it
    out = json.loads(entry_args({"text": text}))["text"]
    assert "Qm9vQmFy" not in out and "sk-ant" not in out
    assert out.endswith(f"(+{len(text) - ARG_CHARS_MAX} chars)")
