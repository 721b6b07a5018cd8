#!/usr/bin/env python3
# A stand-in for PyTorch's `torchrun` (torch cannot be installed here: no internet), put on the
# PATH of test hosts as `torchrun`. It checks and records how it was launched, does a real TCP
# rendezvous between the nodes, then runs the script the way torchrun does.
#
# - Parses torchrun's flags (--nnodes, --node_rank, --nproc_per_node, --master_addr,
#   --master_port; `_` or `-` in the names, `--flag=value` or `--flag value`), then the script
#   and its arguments. Prints them and the DSTACK_* variables, and writes both as JSON to
#   $TORCHRUN_STANDIN_DIR/rank-<node_rank>.json when that variable is set.
# - Refuses (exit 2) a launch whose rank or node count disagrees with DSTACK_NODE_RANK and
#   DSTACK_NODES_NUM.
# - Rendezvous: node rank 0 listens on master_addr:master_port; every other node connects
#   (retrying while the master is not up yet) and sends its rank; the master answers all of them
#   with every rank and the address it came from, once all nnodes have joined. A node missing
#   after TORCHRUN_STANDIN_TIMEOUT seconds (default 120) fails the rendezvous (exit 3).
# - Runs `python3 script args` nproc_per_node times at once with torchrun's variables (RANK,
#   LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT) and exits
#   with the first non-zero exit status of them, else 0.
import json
import os
import socket
import subprocess
import sys
import time

FLAGS = {"nnodes", "node_rank", "nproc_per_node", "master_addr", "master_port"}


def fail(code, message):
    print(f"torchrun stand-in: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse(argv):
    opts, i = {}, 0
    while i < len(argv) and argv[i].startswith("--"):
        name, _, value = argv[i][2:].partition("=")
        name = name.replace("-", "_")
        if name not in FLAGS:
            fail(2, f"unknown option {argv[i]}")
        if value == "" and "=" not in argv[i]:
            i += 1
            if i >= len(argv):
                fail(2, f"--{name} needs a value")
            value = argv[i]
        opts[name] = value
        i += 1
    if i >= len(argv):
        fail(2, "no training script given")
    return opts, argv[i], argv[i + 1:]


def rendezvous(rank, nnodes, addr, port, timeout):
    """Answers [(rank, address)] of every node, the master's first."""
    deadline = time.time() + timeout
    if rank == 0:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((addr, port))
        server.listen(nnodes)
        seen, peers = [(0, addr)], []
        while len(seen) < nnodes:
            server.settimeout(max(0.1, deadline - time.time()))
            try:
                conn, (peer, _) = server.accept()
            except socket.timeout:
                fail(3, f"rendezvous timed out: {len(seen)} of {nnodes} nodes joined ({seen})")
            other = int(conn.recv(64).decode().strip())
            if any(r == other for r, _ in seen):
                fail(3, f"node rank {other} joined twice")
            seen.append((other, peer))
            peers.append(conn)
        seen.sort()
        answer = ",".join(f"{r}@{a}" for r, a in seen).encode()
        for conn in peers:
            conn.sendall(answer)
            conn.close()
        server.close()
        return seen
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                fail(3, f"rendezvous timed out: the master {addr}:{port} did not answer")
            time.sleep(0.2)
    conn.settimeout(max(1, deadline - time.time()))
    conn.sendall(str(rank).encode())
    data = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    conn.close()
    return [(int(r), a) for r, a in (item.split("@") for item in data.decode().split(","))]


def main():
    opts, script, args = parse(sys.argv[1:])
    try:
        nnodes, rank = int(opts.get("nnodes", "1")), int(opts.get("node_rank", "0"))
        nproc, port = int(opts.get("nproc_per_node", "1")), int(opts.get("master_port", "29500"))
    except ValueError as e:
        fail(2, f"a numeric option is not a number: {e}")
    addr = opts.get("master_addr", "127.0.0.1")
    env = {k: v for k, v in os.environ.items() if k.startswith("DSTACK_")}
    print(f"torchrun stand-in: argv {json.dumps(sys.argv[1:])}", flush=True)
    print("torchrun stand-in: env " + " ".join(f"{k}={env[k]!r}" for k in sorted(env) if k in (
        "DSTACK_NODE_RANK", "DSTACK_NODES_NUM", "DSTACK_MASTER_NODE_IP", "DSTACK_NODES_IPS", "DSTACK_GPUS_PER_NODE")), flush=True)
    record_dir = os.environ.get("TORCHRUN_STANDIN_DIR")
    if record_dir:
        os.makedirs(record_dir, exist_ok=True)
        with open(os.path.join(record_dir, f"rank-{rank}.json"), "w") as f:
            json.dump({"argv": sys.argv[1:], "env": env}, f)
    if str(rank) != env.get("DSTACK_NODE_RANK", str(rank)) or str(nnodes) != env.get("DSTACK_NODES_NUM", str(nnodes)):
        fail(2, f"launched as node {rank} of {nnodes}, but DSTACK_NODE_RANK={env.get('DSTACK_NODE_RANK')} DSTACK_NODES_NUM={env.get('DSTACK_NODES_NUM')}")
    nodes = rendezvous(rank, nnodes, addr, port, float(os.environ.get("TORCHRUN_STANDIN_TIMEOUT", "120")))
    print(f"torchrun stand-in: node {rank} of {nnodes} met at {addr}:{port}: {','.join(f'{r}@{a}' for r, a in nodes)}", flush=True)
    children = []
    for local in range(nproc):
        child_env = dict(os.environ, RANK=str(rank * nproc + local), LOCAL_RANK=str(local), WORLD_SIZE=str(nnodes * nproc),
                         LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK=str(rank), MASTER_ADDR=addr, MASTER_PORT=str(port))
        children.append(subprocess.Popen([sys.executable, script, *args], env=child_env))
    codes = [c.wait() for c in children]
    sys.exit(next((c for c in codes if c != 0), 0))


if __name__ == "__main__":
    main()
