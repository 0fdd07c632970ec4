"""Closing a Loop 2 round: signed votes from Redis, counted by the pure consensus rules.

A round has one *ballot* per candidate: the merged candidate (or the implementers'
output when the run has no repository), or, in compete mode, each implementer's own
branch. Validators sign each vote for ``<run>#<candidate>`` in compete mode, so a vote
for one candidate cannot be replayed for another. The round closes when every ballot
has closed; in compete mode the passing candidate with the highest score wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from cfn_client.wire.schema.swarm import TERMINAL_TASK_STATUSES, TaskInfo
from cfn_daemon.core import consensus, loop
from cfn_daemon.core.run_records import ballot_run
from cfn_daemon.core.votes import vote_from_result
from cfn_daemon.queue import audit_log
from cfn_daemon.queue.events import emit
from cfn_daemon.queue.tasks import TaskQueue, now_ms
from cfn_daemon.queue.votes import read_votes, submit_vote
from cfn_daemon.store.keys import Keys
from cfn_daemon.swarm.keyring import KeyRing
from cfn_daemon.util import signing

log = structlog.get_logger("cfn.loop")
_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Ballot:
    """The validators' tasks on one candidate (``None``: the run's only one)."""

    candidate: str | None
    task_ids: list[str]


class Rounds:
    """Tallies and closes consensus rounds of CFN runs."""

    def __init__(self, redis: Any, keys: Keys, tasks: TaskQueue, keyring: KeyRing) -> None:
        self.redis = redis
        self.keys = keys
        self.tasks = tasks
        self.keyring = keyring
        # Each vote's verdict, decided once (when its validator's key is known) and
        # announced once: a later tally never re-judges it with a key pinned since.
        self._verdicts: dict[tuple[str, int, str, str], bool] = {}

    def forget(self, run_id: str) -> None:
        self._verdicts = {
            v: ok
            for v, ok in self._verdicts.items()
            if v[0] != run_id and not v[0].startswith(f"{run_id}#")
        }

    async def _tally(
        self,
        swarm: str,
        state: loop.RunState,
        ballot: Ballot,
        required: frozenset[str],
        timeout_s: float,
        tokens: dict[bytes, bytes],
    ) -> tuple[consensus.RoundOutcome, int]:
        """The ballot's outcome so far and how many votes arrived."""
        run, rnd = state.run_id, state.loop2_round
        vote_run = ballot_run(run, ballot.candidate)
        tasks = await self.tasks.get_many(swarm, ballot.task_ids)
        finished = sum(1 for t in tasks if t.status in TERMINAL_TASK_STATUSES)
        received: list[tuple[consensus.Vote, bool]] = []
        # Votes of a local agent whose key is still on its pipe: judged once it is pinned.
        undecided: list[consensus.Vote] = []
        votes_key = self.keys.votes(swarm, vote_run, rnd)
        votes = await read_votes(self.redis, votes_key)
        votes += await self._redispatch_lost(votes_key, votes, tasks, rnd)
        for vote in votes:
            seen = (vote_run, rnd, vote.validator, vote.signature)
            verified = self._verdicts.get(seen)
            if verified is None:
                verified = self._verified(swarm, vote_run, rnd, vote, tokens, state.validators)
                if verified is None:
                    undecided.append(vote)
                    continue
                await self._judged(swarm, state, ballot, vote, seen, verified)
            received.append((vote, verified))
        started = await self.redis.hget(self.keys.run(swarm, run), f"round_started:{rnd}")
        deadline = bool(started) and now_ms() - int(started) > timeout_s * 1000
        # Every validator task ended and every key is in: nothing more is coming from
        # honest agents (a vote waiting for its key keeps the round open to its deadline).
        all_done = finished == len(ballot.task_ids) and not undecided

        def outcome_of(votes: list[tuple[consensus.Vote, bool]]) -> consensus.RoundOutcome:
            return consensus.close_round(
                state.validators,
                votes,
                consensus.RoundConfig(threshold=state.limits.consensus_threshold),
                deadline_passed=deadline or all_done,
                required=required,
            )

        outcome = outcome_of(received)
        if outcome.status != "open" and undecided:
            # Closing with keys never delivered: those votes cannot be verified.
            for vote in undecided:
                seen = (vote_run, rnd, vote.validator, vote.signature)
                await self._judged(swarm, state, ballot, vote, seen, False)
                received.append((vote, False))
            outcome = outcome_of(received)
        return outcome, len(received)

    async def _judged(
        self,
        swarm: str,
        state: loop.RunState,
        ballot: Ballot,
        vote: consensus.Vote,
        seen: tuple[str, int, str, str],
        verified: bool,
    ) -> None:
        """Record a vote's verdict and announce it (once)."""
        self._verdicts[seen] = verified
        run, rnd = state.run_id, state.loop2_round
        data = {
            "run": run,
            "round": rnd,
            "validator": vote.validator,
            "approve": vote.approve,
            "confidence": vote.confidence,
            "verified": verified,
        }
        if ballot.candidate is not None:
            data["candidate"] = ballot.candidate
        await emit(self.redis, self.keys, swarm, "loop.vote", data)
        if not verified:
            # Forged, replayed from another round, or signed with a swapped key.
            log.warning(
                "vote_rejected",
                swarm=swarm,
                run=run,
                round=rnd,
                validator=vote.validator,
                reason="bad signature",
            )
            await emit(self.redis, self.keys, swarm, "security.vote_rejected", data)
            await audit_log.refused_message(
                self.redis, self.keys, "security.vote_rejected", swarm, data
            )

    def _verified(
        self,
        swarm: str,
        vote_run: str,
        rnd: int,
        vote: consensus.Vote,
        tokens: dict[bytes, bytes],
        members: list[str],
    ) -> bool | None:
        """Checked against the key cfnd pinned for the validator (never one read from
        Redis for a local agent, nor once pinned); a remote agent's Ed25519 key is pinned
        on first use; an old agent's HMAC token (no key) is the legacy check. None: the
        validator is a local agent whose key has not arrived yet (undecided)."""
        if vote.round not in (0, rnd) or vote.validator not in members:
            return False  # nothing is pinned on first use for a name a vote merely claims
        message = consensus.vote_message(vote_run, rnd, vote)
        token = tokens.get(vote.validator.encode(), b"")
        state, key = self.keyring.key_for(swarm, vote.validator, token.decode("ascii", "replace"))
        if state == "pending":
            return None
        if key is not None:
            return signing.verify(key, message, vote.signature)
        if state == "void" or signing.is_public_key(token.decode("ascii", "replace")):
            return False
        return bool(token) and consensus.verify_vote(token, vote_run, rnd, vote)

    async def _redispatch_lost(
        self, key: str, votes: list[consensus.Vote], tasks: list[TaskInfo], rnd: int
    ) -> list[consensus.Vote]:
        """Votes whose validator task stored its (signed) result but whose vote never
        reached the round (the agent gave up during an outage, or the store lost it):
        re-submitted from the stored result, so the round closes on them."""
        have = {v.validator for v in votes}
        out = []
        for task in tasks:
            res = task.result
            who = task.target or (res.agent if res else "")
            if task.status != "succeeded" or res is None or not res.signature or who in have:
                continue
            vote = vote_from_result(who, res, rnd)
            if vote is None:
                continue
            await submit_vote(self.redis, key, vote)
            have.add(who)
            out.append(vote)
            log.warning("vote_redispatched", task=task.id, validator=who, round=rnd)
        return out

    async def close(
        self,
        swarm: str,
        state: loop.RunState,
        ballots: list[Ballot],
        *,
        required: frozenset[str],
        timeout_s: float,
    ) -> loop.ValidatorsClosed | None:
        """The round's ``ValidatorsClosed`` once every ballot closed, else None."""
        run, rnd = state.run_id, state.loop2_round
        outcomes: list[tuple[Ballot, consensus.RoundOutcome]] = []
        votes = 0
        # Read once per round, not once per ballot (compete mode has one per candidate).
        tokens = await self.redis.hgetall(self.keys.tokens(swarm))
        for ballot in ballots:
            outcome, received = await self._tally(swarm, state, ballot, required, timeout_s, tokens)
            if outcome.status == "open":
                return None
            outcomes.append((ballot, outcome))
            votes += received
        passing = [(b, o) for b, o in outcomes if o.status == "passed"]
        best = max(passing, key=lambda bo: bo[1].score or 0.0) if passing else None
        chosen = best or max(outcomes, key=lambda bo: bo[1].score or 0.0)
        ballot, outcome = chosen
        record: dict[str, Any] = {"round": rnd, **msgspec.to_builtins(outcome)}
        if ballot.candidate is not None:
            record["candidate"] = ballot.candidate
            record["candidates"] = {
                b.candidate: {"status": o.status, "score": o.score} for b, o in outcomes
            }
        await emit(
            self.redis,
            self.keys,
            swarm,
            "loop.round",
            {"run": run, "threshold": state.limits.consensus_threshold, **record},
        )
        await self.redis.hset(self.keys.run(swarm, run), f"round:{rnd:03d}", _json.encode(record))
        # Issues raised in earlier rounds stay listed (de-duplicated, highest severity
        # kept) until a round passes: implementers see everything still open.
        earlier = await self._earlier_issues(swarm, run, rnd)
        issues = consensus.aggregate_feedback([o.feedback for _, o in outcomes], previous=earlier)
        feedback = consensus.render_feedback(issues, round_no=rnd)
        if len(outcomes) > 1:
            feedback = _per_candidate(outcomes) + feedback
        return loop.ValidatorsClosed(
            passed=best is not None,
            score=outcome.score,
            no_quorum=all(o.status == "no_quorum" for _, o in outcomes),
            all_failed=votes == 0,
            feedback=feedback,
            summary=outcome.reason,
            round=rnd,
            winner=ballot.candidate if best is not None else None,
        )

    async def _earlier_issues(self, swarm: str, run: str, rnd: int) -> list[consensus.Issue]:
        raw = await self.redis.hgetall(self.keys.run(swarm, run))
        out: list[consensus.Issue] = []
        for key, value in sorted((k.decode(), v) for k, v in raw.items()):
            if key.startswith("round:") and int(key.split(":")[1]) < rnd:
                record = msgspec.json.decode(value)
                out += msgspec.convert(record.get("feedback", []), list[consensus.Issue])
        return out


def _per_candidate(outcomes: list[tuple[Ballot, consensus.RoundOutcome]]) -> str:
    lines = ["Candidates this round:"]
    for ballot, o in outcomes:
        score = "n/a" if o.score is None else f"{o.score:.2f}"
        lines.append(f"- {ballot.candidate}: {o.status} (score {score}) {o.reason}")
    return "\n".join(lines) + "\n\n"
