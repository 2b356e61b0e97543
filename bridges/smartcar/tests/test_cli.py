"""``locktwin smartcar connect`` and ``accounts`` as an operator runs them (a real process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from bridges.smartcar.cli import _code_from, connect_url
from bridges.smartcar.simulator import SmartcarSimulator
from bridges.smartcar.tokens import TokenStore
from twin.asgi import ServedApp

from .conftest import CLIENT_ID, CLIENT_SECRET, make_settings

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]


async def run_cli(served: ServedApp, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    env = {
        **os.environ,
        "LOCKTWIN_SMARTCAR_CLIENT_ID": CLIENT_ID,
        "LOCKTWIN_SMARTCAR_CLIENT_SECRET": CLIENT_SECRET,
        "LOCKTWIN_SMARTCAR_BASE_URL": f"{served.url}/v2.0",
        "LOCKTWIN_SMARTCAR_AUTH_URL": f"{served.url}/oauth/token",
        "LOCKTWIN_SMARTCAR_CONNECT_URL": f"{served.url}/oauth/authorize",
    }
    code = (
        "import sys; from twin.registry import load_adapter_class; "
        "sys.exit(load_adapter_class('smartcar').cli(sys.argv[1:]))"
    )
    process = await anyio.run_process([sys.executable, "-c", code, *args], input=stdin, env=env, cwd=ROOT, check=False)
    return process.returncode, process.stdout.decode(), process.stderr.decode()


async def test_cli_connect_links_account(served: ServedApp, sim: SmartcarSimulator, tmp_path: Path) -> None:
    data_dir = tmp_path / "smartcar"
    state = "state-123"
    # the user approves on Connect and is redirected with a code
    async with httpx.AsyncClient() as http:
        url = connect_url(make_settings(served.url), state=state)
        redirect = await http.get(url)
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    status, out, err = await run_cli(
        served, "connect", "--data-dir", str(data_dir), "--state", state, stdin=location.encode() + b"\n"
    )
    assert status == 0, err
    assert f"{served.url}/oauth/authorize?response_type=code&client_id={CLIENT_ID}" in out
    assert "state=state-123" in out and "scope=read_vehicle_info+read_security+control_security" in out
    assert f"linked Smartcar user {sim.fleet.users[0]} with 3 vehicles" in out
    store = TokenStore(directory=data_dir)
    store.open()
    (account,) = store.accounts()
    store.close()
    assert account.user_id == sim.fleet.users[0]
    assert account.access_token not in out + err and account.refresh_token not in out + err
    status, out, _ = await run_cli(served, "accounts", "--data-dir", str(data_dir))
    assert status == 0
    assert out.strip() == f"{sim.fleet.users[0]}\tlinked\t0 vehicles"


async def test_cli_connect_refused_code(served: ServedApp, tmp_path: Path) -> None:
    status, _, err = await run_cli(served, "connect", "--data-dir", str(tmp_path), "--code", "not-a-code")
    assert status == 1
    assert "connect failed" in err and "authorization code" in err


async def test_cli_connect_state_mismatch(served: ServedApp, tmp_path: Path) -> None:
    status, _, err = await run_cli(
        served, "connect", "--data-dir", str(tmp_path), "--state", "mine", "--code", "http://x/cb?code=abc&state=theirs"
    )
    assert status == 1
    assert "state does not match" in err


async def test_cli_settings_missing_never_prints_secret(tmp_path: Path) -> None:
    code = (
        "import sys; from bridges.smartcar.adapter import SmartcarAdapter; sys.exit(SmartcarAdapter.cli(sys.argv[1:]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKTWIN_")}
    env["LOCKTWIN_SMARTCAR_CLIENT_SECRET"] = CLIENT_SECRET
    process = await anyio.run_process([sys.executable, "-c", code, "accounts"], env=env, cwd=ROOT, check=False)
    assert process.returncode == 2
    assert (
        b"vendors.smartcar.client_id (TOML) or LOCKTWIN_SMARTCAR_CLIENT_ID (environment): Field required"
        in process.stderr
    )
    assert CLIENT_SECRET.encode() not in process.stderr + process.stdout


async def test_cli_reads_config_file_and_data_dir_env(
    served: ServedApp, sim: SmartcarSimulator, tmp_path: Path
) -> None:
    config = tmp_path / "locktwin.toml"
    config.write_text(
        f'[vendors.smartcar]\nclient_id = "{CLIENT_ID}"\nbase_url = "{served.url}/v2.0"\n'
        f'auth_url = "{served.url}/oauth/token"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKTWIN_")}
    env.update({"LOCKTWIN_SMARTCAR_CLIENT_SECRET": CLIENT_SECRET, "LOCKTWIN_DATA_DIR": str(tmp_path / "var")})
    code = "import sys; from twin.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["smartcar", "connect", "--config", str(config), "--code", sim.issue_code()]
    process = await anyio.run_process([sys.executable, "-c", code, *argv], env=env, cwd=ROOT, check=False)
    assert process.returncode == 0, process.stderr.decode()
    assert (tmp_path / "var" / "smartcar" / "tokens.sqlite").exists()


def test_code_from_accepts_code_or_redirect() -> None:
    assert _code_from(" abc \n", state="s") == "abc"
    assert _code_from("http://127.0.0.1/cb?code=xyz&state=s", state="s") == "xyz"
    with pytest.raises(ValueError, match="access_denied"):
        _code_from("http://127.0.0.1/cb?error=access_denied&state=s", state="s")
