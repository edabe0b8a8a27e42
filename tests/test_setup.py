"""setup.sh's apt-get waits while another apt process holds its lock, and stops on any other
failure (run against a stand-in apt-get that answers as Debian's does)."""
import os
import subprocess
import textwrap

from tests.helpers import ROOT

LOCKED = ("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 "
          "(apt-get)")


def _apt_get(tmp_path, answers, tries=10):
    """Run setup.sh's apt_get through a stand-in apt-get that gives `answers` in turn (each
    (exit status, message)); its CompletedProcess and the arguments of each call."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    cases = "\n".join(f'  {i}) echo "{message}" >&2; exit {status};;'
                      for i, (status, message) in enumerate(answers, 1))
    fake = bin_dir / "apt-get"
    fake.write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        echo "$*" >> "{calls}"
        case $(wc -l < "{calls}") in
        {cases}
        esac
        """).format(calls=calls, cases=cases))
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", APT_LOCK_PAUSE="0",
               APT_LOCK_TRIES=str(tries))
    result = subprocess.run(["bash", "-c", "source ./setup.sh && apt_get install -y pkg"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return result, calls.read_text().splitlines()


def test_a_held_lock_is_waited_for(tmp_path):
    result, calls = _apt_get(tmp_path, [(100, LOCKED), (100, LOCKED), (0, "done")])
    assert result.returncode == 0, result.stderr
    assert len(calls) == 3
    assert all(call == "-o DPkg::Lock::Timeout=60 install -y pkg" for call in calls)
    assert result.stderr.count("another apt process holds its lock") == 2


def test_another_failure_stops_at_once_and_shows_apt_gets_message(tmp_path):
    result, calls = _apt_get(tmp_path, [(100, "E: Unable to locate package pkg")])
    assert result.returncode == 1 and len(calls) == 1
    assert "E: Unable to locate package pkg" in result.stderr


def test_a_lock_held_past_every_try_fails_saying_what_to_do(tmp_path):
    result, calls = _apt_get(tmp_path, [(100, LOCKED)] * 3, tries=3)
    assert result.returncode == 1 and len(calls) == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "setup.sh: the apt lock stayed held; rerun setup.sh once the other apt process ends")
