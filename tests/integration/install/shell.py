"""Run README command blocks as written, one command at a time, against a real control plane.

Every substitution a test makes is passed in explicitly (`replace`), so it is visible in the test; the
commands run with `bash -c` from the repository root, with the real kubectl and helm first on PATH and
the admin kubeconfig, exactly as a platform engineer's shell would have them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.control_plane import REPO_ROOT, ControlPlane, ServiceAccountIdentity, kubeconfig

README = REPO_ROOT / "README.md"
#: How the Go clients (kubectl, helm) print a warning header the API server sent.
WARNING = re.compile(r"Warning: (.*)")


def readme_commands(heading: str) -> list[str]:
    """The commands of the first ```bash block under `heading`: continuations joined, comments dropped."""
    text = README.read_text()
    assert heading in text, f"README lost the section {heading!r}"
    section = text.split(heading, 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, f"README section {heading!r} lost its bash block"
    commands, current = [], ""
    for line in match.group(1).splitlines():
        line = re.sub(r"\s{2,}#.*$", "", line).rstrip()
        if not line or line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        commands.append(re.sub(r"\s+", " ", current + line.strip()))
        current = ""
    return commands


def server_warnings(stderr: str) -> list[str]:
    """The API server's warnings (Warning headers) that kubectl or helm printed on stderr."""
    return [m.group(1) for m in WARNING.finditer(stderr)]


@dataclass
class Shell:
    """A platform engineer's shell: admin kubeconfig, kubectl and helm from `make k8s` on PATH."""

    plane: ControlPlane
    log: list[tuple[str, subprocess.CompletedProcess[str]]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "KUBECONFIG"}
        env["PATH"] = f"{self.plane.bin_dir}:{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env["KUBECONFIG"] = str(self.plane.admin_kubeconfig)
        env["HELM_CACHE_HOME"] = str(self.plane.workdir / "helm" / "cache")
        env["HELM_CONFIG_HOME"] = str(self.plane.workdir / "helm" / "config")
        env["HELM_DATA_HOME"] = str(self.plane.workdir / "helm" / "data")
        return env

    def run(self, command: str, *, check: bool = True, warnings_ok: bool = False,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run one command; by default it must succeed and the server must not have warned."""
        result = subprocess.run(["bash", "-c", f"set -euo pipefail\n{command}"], cwd=REPO_ROOT, env=self.env(),
                                capture_output=True, text=True, timeout=timeout, check=False)
        self.log.append((command, result))
        if check:
            assert result.returncode == 0, f"`{command}` failed ({result.returncode}):\n{result.stdout[-2000:]}\n" \
                                           f"{result.stderr[-3000:]}"
        if not warnings_ok:
            assert server_warnings(result.stderr) == [], f"`{command}`: the server warned:\n{result.stderr}"
        return result

    def run_block(self, commands: list[str], *, replace: Mapping[str, str] | None = None,
                  after: Mapping[str, Callable[[], Any]] | None = None) -> dict[str, subprocess.CompletedProcess[str]]:
        """Run a README block; `replace` substitutes text, `after[prefix]` runs after the matching command."""
        outputs = {}
        for original in commands:
            command = original
            for old, new in (replace or {}).items():
                command = command.replace(old, new)
            outputs[original] = self.run(command)
            for prefix, hook in (after or {}).items():
                if original.startswith(prefix):
                    hook()
        return outputs

    def json(self, command: str) -> Any:
        return yaml.safe_load(self.run(command).stdout)


def poll(check: Callable[[], Any], *, timeout: float = 60.0, what: str = "condition", step: float = 0.3) -> Any:
    """Poll `check` until it returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, KeyError, ValueError, TypeError) as error:
            last = repr(error)
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f} s; last: {last!r}")
        time.sleep(step)


class OutOfClusterOperator:
    """The operator the chart's Deployment would run, run on this machine instead (there are no nodes).

    It gets the container's environment exactly as the installed Deployment declares it, read back from
    the API server; the two downward-API values are filled as the kubelet would, and the HTTP port is
    made free (0) since a pod's port 8080 is its own but this machine's is shared.
    """

    def __init__(self, shell: Shell, identity: ServiceAccountIdentity, workdir: Path,
                 deployment: str = "sluice", namespace: str = "sluice-system") -> None:
        self.shell, self.identity, self.workdir = shell, identity, workdir
        self.deployment, self.namespace = deployment, namespace
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)

    def container_env(self) -> dict[str, str]:
        deploy = self.shell.json(f"kubectl -n {self.namespace} get deployment {self.deployment} -o json")
        env: dict[str, str] = {}
        for var in deploy["spec"]["template"]["spec"]["containers"][0]["env"]:
            if "valueFrom" not in var:
                env[var["name"]] = var.get("value", "")  # the server drops `value: ""`
            elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
                env[var["name"]] = self.namespace
            elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
                env[var["name"]] = f"{self.deployment}-out-of-cluster-{self.starts}"
        return env

    def start(self) -> None:
        assert self.process is None
        self.starts += 1
        config = kubeconfig(self.shell.plane.server, self.shell.plane.ca_file, user="sluice",
                            token_file=self.identity.token_file, namespace=self.namespace)
        path = self.workdir / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env.update(self.container_env())
        env.update({"KUBECONFIG": str(path), "SLUICE_HTTP_PORT": "0"})
        self.env = env
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen([sys.executable, "-m", "sluice_operator.cli", "run"], env=env,
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def log_tail(self) -> str:
        path = self.workdir / f"operator-{self.starts}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> int | None:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode

    def restart(self) -> None:
        """What a rollout does: the old pod stops, a new one starts with the Deployment's new template."""
        self.stop()
        self.start()
