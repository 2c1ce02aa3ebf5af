"""A real Kubernetes control plane with no nodes: etcd, kube-apiserver, kube-controller-manager.

Built from the release Go modules by `make k8s` (hack/k8s). The tests start one per pytest run; `make
cluster` starts the same one for people. RBAC is on, clients authenticate with tokens, and the operator
gets the chart's ServiceAccount with a real bound token from the TokenRequest API, kept in a token file
the way a pod sees it.

    python -m tests.support.control_plane up [--dir DIR]     # prints `export KUBECONFIG=...`
    python -m tests.support.control_plane down [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "k8s" / "build.sh"
CRD_DIR = REPO_ROOT / "crds"
DEFAULT_DIR = REPO_ROOT / ".cluster"
OPERATOR_NAMESPACE = "sluice-system"
OPERATOR_SA = "sluice"
ADMIN_USER = "sluice-admin"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
READY_TIMEOUT = 60.0
TOKEN_SECONDS = 48 * 3600
STOP_GRACE = 10.0  # seconds a component gets to exit on SIGTERM before SIGKILL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def k8s_bin_dir() -> Path:
    """The directory of the built binaries: $SLUICE_K8S_BIN, else `hack/k8s/build.sh` (cached, so cheap)."""
    given = os.environ.get("SLUICE_K8S_BIN")
    if given:
        return Path(given)
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`make k8s` failed; run it by hand to see why:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def kubeconfig(server: str, ca_file: Path, *, user: str, token: str | None = None,
               token_file: Path | None = None, namespace: str = "default") -> dict[str, Any]:
    auth: dict[str, Any] = {"tokenFile": str(token_file)} if token_file else {"token": token}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sluice-local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": user, "context": {"cluster": "sluice-local", "user": user, "namespace": namespace}}],
        "current-context": user,
    }


@dataclass
class ServiceAccountIdentity:
    """A ServiceAccount's bound token, in a token file and a kubeconfig that points at that file."""

    namespace: str
    name: str
    token_file: Path
    kubeconfig: Path

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()


@dataclass
class ControlPlane:
    """A running control plane; `kubectl()` runs the real kubectl as the cluster admin."""

    workdir: Path
    bin_dir: Path
    server: str
    ca_file: Path
    admin_token: str
    admin_kubeconfig: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def start(cls, workdir: Path, *, progress: bool = False, detach: bool = False) -> ControlPlane:
        """Start etcd, kube-apiserver and kube-controller-manager; return once the API answers."""
        bin_dir = k8s_bin_dir()
        workdir = workdir.resolve()  # kubeconfigs read a relative path from their own folder: use absolute ones
        if workdir.exists():
            shutil.rmtree(workdir)
        for sub in ("etcd", "certs", "logs", "sa"):
            (workdir / sub).mkdir(parents=True)
        say = (lambda msg: print(f">> {msg}", file=sys.stderr, flush=True)) if progress else (lambda msg: None)

        sa_key = workdir / "certs" / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(workdir / "certs" / "sa.pub")],
                       check=True, capture_output=True)
        admin_token = secrets.token_hex(24)
        (workdir / "certs" / "tokens.csv").write_text(f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{api_port}"
        ca_file = workdir / "certs" / "apiserver.crt"
        admin_kubeconfig = workdir / "admin.kubeconfig"
        plane = cls(workdir, bin_dir, server, ca_file, admin_token, admin_kubeconfig)

        say(f"etcd on 127.0.0.1:{etcd_port}")
        plane._spawn("etcd", [
            str(bin_dir / "etcd"), "--data-dir", str(workdir / "etcd"), "--name", "sluice",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"sluice=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ], detach)
        say(f"kube-apiserver on {server}")
        plane._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--cert-dir={workdir / 'certs'}",
            f"--token-auth-file={workdir / 'certs' / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={workdir / 'certs' / 'sa.pub'}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=true", "--endpoint-reconciler-type=none",
            "-v=1",
        ], detach)
        plane._wait_ready(say)
        admin_kubeconfig.write_text(yaml.safe_dump(kubeconfig(server, ca_file, user=ADMIN_USER, token=admin_token)))
        say("kube-controller-manager (garbagecollector, namespace)")
        plane._spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={admin_kubeconfig}", f"--authentication-kubeconfig={admin_kubeconfig}",
            f"--authorization-kubeconfig={admin_kubeconfig}",
            "--controllers=garbagecollector,namespace", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={workdir / 'certs' / 'kcm'}", "-v=1",
        ], detach)
        return plane

    def _spawn(self, name: str, argv: Sequence[str], detach: bool) -> None:
        log = open(self.workdir / "logs" / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=detach)
        log.close()
        self.processes[name] = process
        (self.workdir / f"{name}.pid").write_text(str(process.pid))

    def _wait_ready(self, say: Any) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
            if self.ca_file.exists():
                try:
                    if self.raw("GET", "/readyz").strip() == "ok":
                        say("API server ready")
                        return
                except OSError as error:
                    last = str(error)
            time.sleep(0.3)
        raise RuntimeError(f"kube-apiserver not ready within {READY_TIMEOUT:.0f} s ({last}); see {self.workdir}/logs")

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)

    # -- talking to it ---------------------------------------------------------------------------

    def raw(self, method: str, path: str, body: Any = None, *, token: str | None = None,
            content_type: str = "application/json") -> str:
        """One HTTP request with the admin token (or `token`); raises urllib's HTTPError on >= 400."""
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca_file))
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Content-Type": content_type,
            "Accept": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return str(response.read().decode())

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=str(kubeconfig or self.admin_kubeconfig))
        result = subprocess.run([str(self.bin_dir / "kubectl"), *args], input=input, capture_output=True,
                                text=True, env=env, check=False, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, objects: Sequence[Mapping[str, Any]], *args: str) -> None:
        self.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump_all([dict(o) for o in objects]))

    # -- setup as the README describes it ---------------------------------------------------------

    def install_crds(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        for crd in ("backpressurepolicies.sluice.dev", "circuitbreakers.sluice.dev"):
            self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}
        self.apply([body])

    def install_operator_identity(self, values: Mapping[str, Any] | None = None,
                                  namespace: str = OPERATOR_NAMESPACE) -> ServiceAccountIdentity:
        """Apply the ServiceAccount and RBAC that charts/sluice renders with `values`; return its token."""
        from tests.support.helm import render

        values = dict(values or {})
        self.ensure_namespace(namespace)
        for extra in [*(values.get("watchNamespaces") or []), *(values.get("circuitNamespaces") or [])]:
            self.ensure_namespace(extra)
        manifests = render(values, namespace=namespace)
        objects = [m.obj for m in manifests if m.kind in RBAC_KINDS]
        self.apply(objects)
        account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
        return self.service_account_identity(namespace, account)

    def service_account_identity(self, namespace: str, name: str, *, seconds: int = TOKEN_SECONDS,
                                 directory: Path | None = None) -> ServiceAccountIdentity:
        """A bound token from the TokenRequest API (`kubectl create token`), in a file and a kubeconfig."""
        directory = directory or self.workdir / "sa" / f"{namespace}.{name}"
        directory.mkdir(parents=True, exist_ok=True)
        token_file = directory / "token"
        self.refresh_token(namespace, name, token_file, seconds=seconds)
        config = directory / "kubeconfig"
        config.write_text(yaml.safe_dump(kubeconfig(self.server, self.ca_file, user=f"{namespace}.{name}",
                                                    token_file=token_file, namespace=namespace)))
        return ServiceAccountIdentity(namespace, name, token_file, config)

    def refresh_token(self, namespace: str, name: str, token_file: Path, *, seconds: int = TOKEN_SECONDS) -> str:
        """Write a fresh bound token atomically (as the kubelet does for a projected volume)."""
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={seconds}s").stdout.strip()
        tmp = token_file.with_suffix(".tmp")
        tmp.write_text(token + "\n")
        tmp.replace(token_file)
        return token



def _up(directory: Path) -> int:
    started = time.monotonic()
    plane = ControlPlane.start(directory, progress=True, detach=True)
    print(">> applying the CRDs", file=sys.stderr)
    plane.install_crds()
    print(f">> applying the chart's ServiceAccount and RBAC in {OPERATOR_NAMESPACE}", file=sys.stderr)
    identity = plane.install_operator_identity()
    (directory / "operator.kubeconfig").write_text(identity.kubeconfig.read_text())
    print(f">> control plane up in {time.monotonic() - started:.1f} s; logs in {directory}/logs", file=sys.stderr)
    print(f"# the admin (kubectl):\nexport KUBECONFIG={plane.admin_kubeconfig}")
    print(f"# the operator, as {identity.username} (sluice run):\n"
          f"#   KUBECONFIG={directory / 'operator.kubeconfig'} SLUICE_LEASE_NAMESPACE={OPERATOR_NAMESPACE} sluice run")
    print(f"# kubectl and helm are in {plane.bin_dir}:\nexport PATH={plane.bin_dir}:$PATH")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _down(directory: Path) -> int:
    """Stop each component in turn: SIGTERM, then SIGKILL if it is still there after STOP_GRACE seconds."""
    stopped = []
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        pid_file = directory / f"{name}.pid"
        if not pid_file.exists():
            continue
        with contextlib.suppress(ProcessLookupError, ValueError):
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped.append(name)
        pid_file.unlink()
    print(f">> stopped {', '.join(stopped) or 'nothing (no control plane was running)'}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="control_plane", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (default: .cluster/)")
    args = parser.parse_args(argv)
    args.dir = args.dir.resolve()
    if args.action == "up":
        _down(args.dir)
        return _up(args.dir)
    return _down(args.dir)


if __name__ == "__main__":
    sys.exit(main())
