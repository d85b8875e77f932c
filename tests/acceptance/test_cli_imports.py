"""`newsletter import` and `newsletter export` as an operator runs them: real processes, a real database."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_cli import base_env
from tests.harness import free_port

pytestmark = pytest.mark.asyncio


def newsletter(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        env=base_env(DATABASE_URL=database_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_import_then_export_through_the_command(database_url: str, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    rows = "".join(f"reader{n}@example.com,Reader {n}\n" for n in range(150))
    people.write_text("email,name\n" + rows + "broken,Broken\nreader1@example.com,Again\n", encoding="utf-8")

    imported = newsletter("import", str(people), "--list", "default", database_url=database_url, cwd=tmp_path)
    again = newsletter("import", str(people), database_url=database_url, cwd=tmp_path)
    exported = newsletter("export", "--list", "default", database_url=database_url, cwd=tmp_path)
    to_file = newsletter(
        "export",
        "--status",
        "confirmed",
        "--output",
        str(tmp_path / "out.csv"),
        database_url=database_url,
        cwd=tmp_path,
    )

    assert imported.returncode == 0, imported.stderr
    assert "150 inserted, 0 updated, 150 subscribed to 'default', 2 rejected" in imported.stdout
    assert "line 152: email: This is not a valid email address" in imported.stdout
    assert "line 153: duplicate of line 3 [reader1@example.com]" in imported.stdout
    assert "0 inserted, 150 updated, 0 subscribed" in again.stdout
    assert exported.returncode == 0, exported.stderr
    exported_rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert sorted(row["email"] for row in exported_rows) == sorted(
        f"reader{n}@example.com" for n in range(150)
    )
    assert {(row["list"], row["status"]) for row in exported_rows} == {("default", "confirmed")}
    assert to_file.returncode == 0, to_file.stderr
    assert (tmp_path / "out.csv").read_text() == exported.stdout


async def test_import_failures_exit_non_zero_with_a_clear_message(database_url: str, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text("email\nada@example.com\n")
    no_email = tmp_path / "no-email.csv"
    no_email.write_text("mail\nada@example.com\n")
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"

    missing = newsletter("import", str(tmp_path / "nope.csv"), database_url=database_url, cwd=tmp_path)
    unknown_list = newsletter(
        "import", str(people), "--list", "nope", database_url=database_url, cwd=tmp_path
    )
    without_email = newsletter("import", str(no_email), database_url=database_url, cwd=tmp_path)
    database_down = newsletter("import", str(people), database_url=down, cwd=tmp_path)
    export_unknown = newsletter("export", "--list", "nope", database_url=database_url, cwd=tmp_path)

    assert missing.returncode != 0 and "does not exist" in missing.stderr
    assert unknown_list.returncode != 0
    assert "nothing imported: list 'nope' does not exist" in unknown_list.stderr
    assert without_email.returncode != 0 and "no 'email' column" in without_email.stderr
    assert database_down.returncode != 0 and "cannot connect to the database" in database_down.stderr
    assert export_unknown.returncode != 0 and "list 'nope' does not exist" in export_unknown.stderr
    assert export_unknown.stdout == ""
    for result in (missing, unknown_list, without_email, database_down, export_unknown):
        assert "Traceback" not in result.stderr
