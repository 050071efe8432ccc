"""The model URI pattern: what it admits, and that an admitted pvc:// URI cannot leave its claim."""

from __future__ import annotations

import itertools
import posixpath
import re
import urllib.parse

from tests.support.invalid_manifests import ACCEPTED_URIS, EVALUATE, REFUSED_URIS, rollout_policy, steps, with_model

from mlrollout.api.uris import URI_PATTERN
from mlrollout.controller.store import PVC_MOUNT_ROOT, locate, store_access
from mlrollout.validate import validate_documents


def accepted_offline(uri: str) -> bool:
    return not validate_documents([("t", 1, with_model(uri=uri))])


def test_the_family_splits_as_documented() -> None:
    assert [u for u in ACCEPTED_URIS if not accepted_offline(u)] == []
    assert [u for u in REFUSED_URIS if accepted_offline(u)] == []


def test_the_pattern_matches_the_whole_uri() -> None:
    """An anchored pattern: a valid URI followed by anything else is refused (pydantic reads `$` as end
    of text, unlike Python's `re.match`, which lets a final newline through)."""
    for uri in ACCEPTED_URIS:
        assert not accepted_offline(uri + "\n"), uri
        assert not accepted_offline(" " + uri), uri


def test_a_holdout_may_be_on_every_store_the_model_server_reads_but_not_the_registry() -> None:
    """Issue #16: a gs:// holdout was refused by the step though the Job reads gs:// as the servers do."""

    def errors(uri: str) -> list[str]:
        step = {"evaluate": {**EVALUATE, "dataset": {**EVALUATE["dataset"], "uri": uri}}}
        return [str(e) for e in validate_documents([("t", 1, rollout_policy(strategy=steps(step)))])]

    for uri in ("gs://holdouts/wine.csv", "gs://my_bucket/a/b/holdout.npz", "s3://holdouts/wine.csv",
                "http://store/holdout.csv", "file:///data/holdout.csv", "pvc://claim/holdout.csv"):  # fmt: skip
        assert errors(uri) == [], uri
    for uri in ("models:/wine/1", "gs://holdouts", "gs://A/holdout.csv", "ftp://store/holdout.csv"):
        assert any("dataset.uri" in e for e in errors(uri)), uri


TOKENS = ["a", ".", "/", "%2e", "%2F", "%00", "%", "?", "~"]


def test_no_admitted_pvc_uri_leaves_its_claim() -> None:
    """Every path of up to five tokens, some of them hostile: what the pattern admits stays inside."""
    admitted = 0
    for claim in ("claim", "c.d"):
        for n in range(1, 6):
            for tokens in itertools.product(TOKENS, repeat=n):
                uri = f"pvc://{claim}/{''.join(tokens)}"
                if re.search(URI_PATTERN, uri) is None:
                    continue
                admitted += 1
                server_uri, volumes = locate(uri), store_access([uri], None).volumes
                assert volumes[0]["persistentVolumeClaim"]["claimName"] == claim
                # the model server reads urllib.parse.unquote(urlparse(uri).path)
                read = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlparse(server_uri).path))
                assert read.startswith(f"{PVC_MOUNT_ROOT}/{claim}/") and "\0" not in read, uri
    assert admitted > 1000
