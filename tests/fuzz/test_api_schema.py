"""Every operation of the OpenAPI description, fuzzed with schemathesis against a running `newsletter serve`:
no 5xx, and every response matches the description. Derandomized, so a run is repeatable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.test_cli import base_env
from tests.harness import free_port


@pytest.fixture(scope="module")
def running_service(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`newsletter serve` on a database of its own, and an admin token for it."""
    import asyncio

    from tests.conftest import create_database, drop_database
    from tests.harness import with_database

    name = asyncio.run(create_database(postgres_url, None))
    url = with_database(postgres_url, name)
    cwd = Path(tmp_path_factory.mktemp("fuzz"))
    port = free_port()
    env = base_env(
        DATABASE_URL=url,
        NEWSLETTER_PORT=str(port),
        NEWSLETTER_EMAIL_URL="memory://",
        NEWSLETTER_SIGNUP_IP_LIMIT="1000000",
        NEWSLETTER_SIGNUP_ADDRESS_LIMIT="1000000",
    )
    token = subprocess.run(
        [sys.executable, "-m", "newsletter", "tokens", "create", "--name", "fuzz"],
        env=env, cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    log = (cwd / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--no-migrate"],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base, token
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        asyncio.run(drop_database(postgres_url, name))


def test_no_operation_answers_5xx_or_breaks_its_schema(
    running_service: tuple[str, str], tmp_path: Path
) -> None:
    base, token = running_service
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"), "run", f"{base}/openapi.json",
            "--header", f"Authorization: Bearer {token}",
            "--checks", "not_a_server_error,response_schema_conformance",
            "--max-examples", os.environ.get("FUZZ_EXAMPLES", "15"),
            "--phases", "examples,coverage,fuzzing",
            "--generation-deterministic", "--seed", "20261128", "--workers", "1", "--no-color",
        ],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    last_line = summary.strip().splitlines()[-1]
    assert "passed" in last_line or "warnings" in last_line, summary
    assert "failure" not in last_line and "error" not in last_line, summary
