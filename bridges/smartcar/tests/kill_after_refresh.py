"""Run as a process: refresh the stored account's tokens, then die by SIGKILL before any other call.

Usage: python -m bridges.smartcar.tests.kill_after_refresh DATA_DIR SIM_URL USER_ID
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio

from bridges.smartcar.auth import TokenManager
from bridges.smartcar.client import SmartcarClient
from bridges.smartcar.tests.conftest import make_settings
from bridges.smartcar.tokens import TokenStore


async def main(data_dir: Path, url: str, user_id: str) -> None:
    store = TokenStore(directory=data_dir)
    store.open()
    store.db.execute("UPDATE accounts SET access_expires_at = 0")
    client = SmartcarClient(settings=make_settings(url))
    await client.start()
    manager = TokenManager(client=client, store=store, refresh_margin=300.0)
    await manager.access_token(user_id)
    # the token response is in and stored; the process dies before the token is used
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), sys.argv[2], sys.argv[3])
