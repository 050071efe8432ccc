"""Kubernetes pod discovery for Prometheus, as a sidecar writing a file_sd target file.

Debian's prometheus package is built without the Kubernetes service-discovery plugin (Debian does not
package its client-go dependencies; its config parser rejects `kubernetes_sd_configs`). This sidecar
does the same job for our case: every INTERVAL seconds it lists the Running pods labelled
SELECTOR through the API server (with the pod's service-account token) and writes one target per pod
port named PORT_NAME to OUTPUT, atomically; Prometheus's file_sd picks the file up. Standard library only.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

SA = "/var/run/secrets/kubernetes.io/serviceaccount"


def targets(pods: list[dict[str, Any]], port_name: str) -> list[dict[str, Any]]:
    """file_sd groups for the Running pods with an IP and a container port named PORT_NAME."""
    groups = []
    for pod in pods:
        status, meta = pod.get("status") or {}, pod.get("metadata") or {}
        ip = status.get("podIP")
        if status.get("phase") != "Running" or not ip:
            continue
        for container in (pod.get("spec") or {}).get("containers") or []:
            for port in container.get("ports") or []:
                if port.get("name") == port_name:
                    groups.append(
                        {
                            "targets": [f"{ip}:{port['containerPort']}"],
                            "labels": {"pod": meta.get("name", ""), "pod_namespace": meta.get("namespace", "")},
                        }
                    )
    return sorted(groups, key=lambda g: g["targets"][0])


def list_pods(selector: str) -> list[dict[str, Any]]:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    with open(f"{SA}/token") as fh:
        token = fh.read().strip()
    ctx = ssl.create_default_context(cafile=f"{SA}/ca.crt")
    query = urllib.parse.urlencode({"labelSelector": selector})
    req = urllib.request.Request(
        f"https://{host}:{port}/api/v1/pods?{query}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        items: list[dict[str, Any]] = json.load(resp)["items"]
        return items


def main() -> int:
    selector = os.environ.get("SELECTOR", "app.kubernetes.io/managed-by=mlrollout")
    port_name = os.environ.get("PORT_NAME", "http")
    output = os.environ.get("OUTPUT", "/sd/targets.json")
    interval = float(os.environ.get("INTERVAL", "2"))
    last = None
    while True:
        try:
            groups = targets(list_pods(selector), port_name)
            text = json.dumps(groups)
            if text != last:
                tmp = output + ".tmp"
                with open(tmp, "w") as fh:
                    fh.write(text)
                os.replace(tmp, output)
                last = text
                print(f"{len(groups)} targets", flush=True)
        except (OSError, ValueError, KeyError) as exc:
            print(f"pod discovery failed: {exc}", file=sys.stderr, flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
