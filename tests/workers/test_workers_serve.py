"""Real worker processes on one port: every worker serves, a stop signal ends them all gracefully.

Each test runs ``app.py`` (a parent and its workers) as a real process and
talks to it over real sockets on 127.0.0.1; every response names the
worker's pid. At the end the test process has no descriptor left over
(``LeakCheck``) and every worker pid is gone.
"""

from __future__ import annotations

import signal

import pytest
from workers_support import ServerProcess, TcpClient, WsClient, cover_workers, every_client, shutdown_lines

from conntable.testing import LeakCheck

WS_KINDS = ["ws", "ws-returned", "ws-forever"]


@pytest.mark.parametrize("reuse_port", ["yes", "no"], ids=["SO_REUSEPORT", "inherited-socket"])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_every_worker_serves_the_one_port(reuse_port, loop):
    with LeakCheck(), ServerProcess("tcp", "--workers", "3", "--reuse-port", reuse_port, "--loop", loop) as server:
        server.started()
        assert len(set(server.pids)) == 3
        clients = cover_workers(TcpClient, server.port, server.pids)
        for group in clients.values():
            assert group[0].echo(b"hello\n") == b"hello\n"

        assert server.stop(signal.SIGTERM) == 0, server.log()
        assert all(client.read_to_end() == b"" for client in every_client(clients))  # every one saw a close
        for client in every_client(clients):
            client.close()
        assert "all 3 workers shut down gracefully" in server.log()
        assert server.workers_gone()
        lines = shutdown_lines(server)
        assert sorted(lines) == sorted(server.pids), server.log()
        for pid, (closed, aborted, before, after) in lines.items():
            assert (closed, aborted) == (len(clients[pid]), 0), server.log()
            assert after == before, f"worker {pid} had {after - before} more sockets after its shutdown"


@pytest.mark.parametrize("kind", WS_KINDS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_closes_every_websocket_with_1001(kind, signum):
    with LeakCheck(), ServerProcess(kind, "--workers", "2") as server:
        server.started()
        clients = cover_workers(WsClient, server.port, server.pids, per_worker=3)
        assert all(client.echo("hi") == "hi" for client in every_client(clients))

        assert server.stop(signum) == 0, server.log()
        assert [client.close_code() for client in every_client(clients)] == [1001] * len(every_client(clients))
        for client in every_client(clients):
            client.close()
        assert "all 2 workers shut down gracefully" in server.log()
        assert server.workers_gone()
        lines = shutdown_lines(server)
        for pid in server.pids:
            closed, aborted, before, after = lines[pid]
            assert (closed, aborted, after) == (len(clients[pid]), 0, before), server.log()


def test_a_killed_worker_is_restarted_and_the_others_are_not_disturbed():
    with LeakCheck(), ServerProcess("ws", "--workers", "3") as server:
        server.started()
        clients = cover_workers(WsClient, server.port, server.pids, per_worker=2)
        victim_index, victim = 1, server.pids[1]
        others = [pid for pid in server.pids if pid != victim]
        mark = len(server.lines)

        server.every_pid.append(victim)
        import os

        os.kill(victim, signal.SIGKILL)
        server.wait_for(rf"worker {victim_index} \(pid {victim}\) died \(killed by SIGKILL\) after serving [\d.]+ s; "
                        rf"restarting it in [\d.]+ s \(restart 1\)", mark)
        replacement = server.restarted(victim_index, mark)
        assert replacement not in server.pids

        assert all(client.close_code() is None for client in clients[victim])  # cut off, no close frame
        for pid in others:  # still open, still answering
            assert all(client.echo(f"to {pid}") == f"to {pid}" for client in clients[pid])
        newcomers = cover_workers(WsClient, server.port, [*others, replacement])  # the new one serves too
        assert newcomers[replacement]

        assert server.stop(signal.SIGTERM) == 0, server.log()
        survivors = [c for pid in others for c in clients[pid]] + every_client(newcomers)
        assert [client.close_code() for client in survivors] == [1001] * len(survivors)
        for client in every_client(clients) + every_client(newcomers):
            client.close()
        assert server.workers_gone()
        lines = shutdown_lines(server)
        assert sorted(lines) == sorted([*others, replacement])
        for pid in others:  # nothing lost: every connection they held was closed gracefully at the end
            assert lines[pid][:2] == (len(clients[pid]) + len(newcomers[pid]), 0), server.log()


def test_the_limit_is_split_over_the_workers():
    from websockets.exceptions import InvalidStatus

    with LeakCheck(), ServerProcess("ws", "--workers", "3", "--max-connections", "7") as server:
        server.started()
        limits = {}
        for index, pid in enumerate(server.pids):
            limits[pid] = int(server.wait_for(rf"worker {index} \(pid {pid}\) serving on .*, up to (\d+) "
                                              rf"connections").group(1))
        assert [limits[pid] for pid in server.pids] == [3, 2, 2]  # 7 // 3 each, the remainder to the first

        admitted = {pid: [] for pid in server.pids}
        refused = 0
        for _ in range(60):  # SO_REUSEPORT spreads them: every worker sees far more than its share
            try:
                client = WsClient(server.port)
            except InvalidStatus as exc:
                assert exc.response.status_code == 503
                refused += 1
                continue
            admitted[client.pid].append(client)
        assert {pid: len(group) for pid, group in admitted.items()} == limits
        assert refused == 60 - 7

        assert server.stop(signal.SIGTERM) == 0, server.log()
        assert all(client.close_code() == 1001 for client in every_client(admitted))
        for client in every_client(admitted):
            client.close()
        assert server.workers_gone()


def test_summary_lines_on_sigusr1_name_each_worker():
    with LeakCheck(), ServerProcess("tcp", "--workers", "2") as server:
        server.started()
        clients = cover_workers(TcpClient, server.port, server.pids, per_worker=2)
        mark = len(server.lines)
        server.send(signal.SIGUSR1)
        for index, pid in enumerate(server.pids):
            count = len(clients[pid])
            server.wait_for(rf"worker {index} pid {pid}: {count} connections \(peak {count}, .*opened {count}, "
                            rf"closed 0, refused 0, aborted 0; .* descriptors; RSS [\d.]+ MiB; up .*, 0 restarts", mark)
        total = len(every_client(clients))
        server.wait_for(rf"all 2 workers: {total} connections .*opened {total}", mark)

        assert server.stop(signal.SIGTERM) == 0, server.log()
        for client in every_client(clients):
            client.close()
        assert server.workers_gone()
