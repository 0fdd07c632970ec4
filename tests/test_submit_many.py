"""``task.submit_many`` (the clients' ``task_submit_many``) and ``cfnctl run --batch``
against a real cfnd whose ``shell`` agents run the task text (tests/cli_support.py)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from cfn_client.api import AsyncClient, Client
from cfn_client.api.base import batch_chunks
from cfn_client.wire.errors import InvalidArgs
from cfn_client.wire.schema.swarm import MAX_SUBMIT_MANY, TaskSpec
from tests.cli_support import Swarm, swarm
from tests.test_cli_tasks import workers  # two idle shell agents, one swarm per module

__all__ = ["swarm", "workers"]  # fixtures, imported for pytest


def task_count(cfn: Client, name: str) -> int:
    return sum(cfn.swarm_status(name).tasks.values())


# --------------------------------------------------------------------------- the op


def test_submit_many_runs_every_task_in_order(workers: Swarm) -> None:
    specs = [TaskSpec(text=f"echo n{i}", priority="high" if i % 2 else "low") for i in range(60)]
    with workers.client(timeout_s=60) as cfn:
        got = cfn.task_submit_many(specs, swarm=workers.name)
        assert got.swarm == workers.name and len(set(got.ids)) == 60
        done = cfn.task_wait(got.ids, swarm=workers.name, timeout_s=60)
        assert done.counts == {"succeeded": 60}
        by_id = {t.id: t for t in done.tasks}
        for i, tid in enumerate(got.ids):  # the ids come back in the order given
            task = by_id[tid]
            assert task.text == f"echo n{i}"
            assert task.priority == ("high" if i % 2 else "low")
            assert task.result is not None and task.result.output == f"n{i}\n"


async def test_async_client_submit_many_takes_mappings(workers: Swarm) -> None:
    async with AsyncClient(workers.socket, timeout_s=60) as cfn:
        got = await cfn.task_submit_many(
            [{"text": "echo a", "max_attempts": 2}, {"text": "echo b", "timeout_s": 30}],
            swarm=workers.name,
        )
        first = await cfn.task_status(got.ids[0], swarm=workers.name)
        second = await cfn.task_status(got.ids[1], swarm=workers.name)
    assert (first.text, first.max_attempts) == ("echo a", 2)
    assert (second.text, second.timeout_s) == ("echo b", 30.0)


def test_a_repeated_batch_with_the_same_keys_queues_nothing_new(swarm: Swarm) -> None:
    specs = [TaskSpec(text=f"echo k{i}", idempotency_key=f"batch-k{i}") for i in range(5)]
    with swarm.client(timeout_s=60) as cfn:
        first = cfn.task_submit_many(specs, swarm=swarm.name)
        again = cfn.task_submit_many(specs, swarm=swarm.name)
        assert again.ids == first.ids
        assert task_count(cfn, swarm.name) == 5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"text": "   "}, "task text is empty"),
        ({"text": "x", "type": "wizard"}, "wizard"),
        ({"text": "x", "max_attempts": 0}, "max_attempts 0: expected 1..100"),
    ],
)
def test_one_bad_task_refuses_the_batch_and_queues_none(
    swarm: Swarm, bad: dict[str, object], message: str
) -> None:
    tasks = [{"text": "echo ok"}, {"text": "echo ok too"}, bad, {"text": "echo after"}]
    with swarm.client(timeout_s=60) as cfn:
        with pytest.raises(InvalidArgs) as info:
            cfn.task_submit_many(tasks, swarm=swarm.name)
        assert info.value.message.startswith("tasks[2]: "), info.value.message
        assert message in info.value.message
        assert "none of the 4 tasks was queued" in info.value.message
        assert info.value.details["index"] == 2
        assert task_count(cfn, swarm.name) == 0
        assert cfn.task_list(swarm.name).tasks == []


def test_over_the_limit_and_empty_batches_are_refused(swarm: Swarm) -> None:
    with swarm.client(timeout_s=60) as cfn:
        with pytest.raises(InvalidArgs) as info:
            cfn.task_submit_many([{"text": "true"}] * (MAX_SUBMIT_MANY + 1), swarm=swarm.name)
        assert f"{MAX_SUBMIT_MANY + 1} tasks: expected 1..{MAX_SUBMIT_MANY}" in str(info.value)
        assert info.value.details["max_tasks"] == MAX_SUBMIT_MANY
        with pytest.raises(InvalidArgs, match=r"0 tasks: expected 1\.\.1000"):
            cfn.task_submit_many([], swarm=swarm.name)
        assert task_count(cfn, swarm.name) == 0


def test_a_batch_at_the_limit_is_queued(swarm: Swarm) -> None:
    with swarm.client(timeout_s=60) as cfn:
        cfn.swarm_destroy(swarm.name, force=True)  # no agents: only the queuing counts
        cfn.swarm_init("mesh", 2, name=swarm.name)
        got = cfn.task_submit_many([{"text": "true"}] * MAX_SUBMIT_MANY, swarm=swarm.name)
        assert len(set(got.ids)) == MAX_SUBMIT_MANY
        assert task_count(cfn, swarm.name) == MAX_SUBMIT_MANY


def test_batch_chunks_bound_count_and_bytes() -> None:
    specs = [TaskSpec(text="x" * 100) for _ in range(25)]
    assert [len(c) for c in batch_chunks(specs, 0, max_tasks=10)] == [10, 10, 5]
    size = len(msgspec.json.encode(specs[0])) + 1
    chunks = list(batch_chunks(specs, 2 * 5 * size))  # half a frame: 5 tasks' JSON
    assert [len(c) for c in chunks] == [5] * 5
    assert [t for c in chunks for t in c] == specs
    (alone,) = batch_chunks([TaskSpec(text="y" * 5000)], 4096)  # too big: its own chunk
    assert len(alone) == 1


# --------------------------------------------------------------------------- the CLI


def jsonl(*items: object) -> str:
    return "".join(json.dumps(i) + "\n" for i in items)


def test_run_batch_file_prints_the_ids_and_waits(workers: Swarm, tmp_path: Path) -> None:
    batch = tmp_path / "tasks.jsonl"
    batch.write_text(
        jsonl({"text": "echo one"}, {"text": "echo two", "priority": "high"})
        + "\n"  # blank lines are skipped
        + jsonl({"text": "echo three", "type": "shell", "max_attempts": 2})
    )
    code, out, err = workers.cli("run", "--batch", str(batch))
    assert (code, err) == (0, "")
    ids = out.split()
    assert len(ids) == 3 and out == "".join(f"{t}\n" for t in ids)
    with workers.client(timeout_s=60) as cfn:
        done = cfn.task_wait(ids, swarm=workers.name, timeout_s=60)
        assert done.counts == {"succeeded": 3}
        assert [cfn.task_status(t, workers.name).text for t in ids] == [
            "echo one", "echo two", "echo three",
        ]  # fmt: skip
    code, out, err = workers.cli("--json", "run", "--batch", str(batch), "--wait")
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert [t["status"] for t in doc["tasks"]] == ["succeeded"] * 3
    assert [t["result"]["output"] for t in doc["tasks"]] == ["one\n", "two\n", "three\n"]


def test_run_batch_from_stdin_with_defaults_from_the_options(workers: Swarm) -> None:
    lines = jsonl({"text": "echo in1"}, {"text": "exit 3", "max_attempts": 1})
    code, out, err = workers.cli(
        "run", "--batch", "-", "--priority", "low", "--wait", "--timeout", "60", input=lines
    )
    assert code == 1, (out, err)  # one failed: exit 1, as `run --wait`
    assert "1 of 2 succeeded" in out and "failed" in out, out
    assert "exit code 3" in err, err  # the failed one's tail, as `run --wait`
    with workers.client(timeout_s=60) as cfn:
        tasks = cfn.task_list(workers.name, limit=1000).tasks
    mine = [t for t in tasks if t.text in ("echo in1", "exit 3")]
    assert {t.priority for t in mine} == {"low"}


def test_run_batch_in_chunks(swarm: Swarm) -> None:
    lines = jsonl(*({"text": f"echo c{i}"} for i in range(25)))
    code, out, err = swarm.cli("--json", "run", "--batch", "-", "--chunk", "10", input=lines)
    assert code == 0, err
    ids = json.loads(out)["ids"]
    assert len(set(ids)) == 25
    with swarm.client(timeout_s=60) as cfn:
        assert cfn.task_wait(ids, swarm=swarm.name, timeout_s=60).counts == {"succeeded": 25}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('{"text": "echo a"}\n{"text": "echo b"\n', "line 2: not JSON"),
        ('{"text": "echo a"}\n\n["echo b"]\n', "line 3: expected a JSON object"),
        ('{"text": "a"}\n{"txt": "b"}\n', "line 2: "),
        ('{"text": "a"}\n{"text": "b", "priority": "urgent"}\n', "line 2: "),
        ('{"text": "a", "type": 7}\n', "line 1: "),
    ],
)
def test_run_batch_bad_line_names_it_and_submits_nothing(
    swarm: Swarm, lines: str, expected: str
) -> None:
    code, out, err = swarm.cli("run", "--batch", "-", input=lines)
    assert code == 2, (out, err)
    assert out == ""
    assert expected in err and "nothing was submitted" in err, err
    assert '{"text": ' in err  # says what a line should look like
    with swarm.client(timeout_s=60) as cfn:
        assert task_count(cfn, swarm.name) == 0


def test_run_batch_usage_errors(swarm: Swarm, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    code, _, err = swarm.cli("run", "--batch", str(empty))
    assert code == 2 and "no tasks" in err, err
    code, _, err = swarm.cli("run", "echo x", "--batch", str(empty))
    assert code == 2 and "--batch" in err, err
    code, _, err = swarm.cli("run", "--batch", str(empty), "--idempotency-key", "k")
    assert code == 2 and "idempotency_key" in err, err
