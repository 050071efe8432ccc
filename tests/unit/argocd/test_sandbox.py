"""The health check as Argo CD runs a user override: in its sandbox, by Argo CD's own code.

Installed exactly as docs/argocd.md says (argocd-cm key `resource.customizations.health.<group>_<kind>`),
evaluated by `ResourceHealthOverrides.GetResourceHealth` from Argo CD's `util/lua`, which loads only the
`package`, `base`, `table` and a safe `os` library unless `useOpenLibs` is set.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from tests.support import argocd

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.json"))


def test_every_fixture_in_argo_cds_sandbox() -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd", "labels": {"app.kubernetes.io/part-of": "argocd"}},
        "data": {
            "resource.customizations.health.mlrollout.io_ModelDeployment": (
                ROOT / "charts" / "mlrollout" / "argocd" / "health.lua"
            ).read_text()
        },
    }
    fixtures = {p.stem: json.loads(p.read_text()) for p in FIXTURES}
    cases = [argocd.case(name, f["object"], health=True) for name, f in fixtures.items()]
    answers = argocd.evaluate(cases, config_map=yaml.safe_dump(config_map))
    got = {a["id"]: a["health"] for a in answers}
    wrong = {
        name: got[name]
        for name, f in fixtures.items()
        if got[name].get("status") != f["expect"]["status"]
        or f["expect"]["messageContains"] not in got[name]["message"]
    }
    assert not wrong, json.dumps(wrong, indent=1)
