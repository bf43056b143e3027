"""`zoo train NAME --nproc N`: the same command, run by torchrun (torch.distributed.run) in N processes per
machine. torchrun sets RANK / WORLD_SIZE / MASTER_ADDR for each process, restarts nothing (--max-restarts 0)
and stops every process when one fails; the trainer then joins the process group (zoo/training/_distributed.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from zoo.errors import ZooError
from zoo.outputs import RUNS


def torchrun_command(nproc: int, nnodes: int, node_rank: int, master_addr: str | None, master_port: int,
                     argv: list[str]) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    if nnodes == 1 and master_addr is None:
        command.append("--standalone")   # a free port on this machine, no rendezvous to set up
    else:
        command += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--master-addr={master_addr or '127.0.0.1'}",
                    f"--master-port={master_port}"]
    return command + ["-m", "zoo.cli", "train", *argv]


def launch(nproc: int, nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None, master_port: int = 29500,
           out: str | Path | None = None, argv: list[str] = ()) -> None:
    """Run `zoo train <argv>` in `nproc` processes under torchrun; ZooError (exit 1) naming the failure and where
    the last good checkpoint is when a process dies."""
    if nnodes > 1 and master_addr is None:
        raise ZooError("--nnodes > 1 needs --master-addr: the address of node 0, which every node can reach")
    result = subprocess.run(torchrun_command(nproc, nnodes, node_rank, master_addr, master_port, list(argv)))
    if result.returncode == 130 or result.returncode == -2:
        raise KeyboardInterrupt
    if result.returncode != 0:
        folder = Path(out) if out is not None else RUNS
        raise ZooError(f"a training process failed (torchrun exit {result.returncode}; its error is above) and the "
                       f"others were stopped; the last good checkpoint is in {folder}/: the same command with "
                       "--resume continues from it", exit_code=1)
