"""The resource actions through Argo CD's own code: `ExecuteResourceActionDiscovery` and
`ExecuteResourceAction` from `util/lua`, as the API server calls them, with the scripts installed from the
chart's argocd-cm snippet and as a built-in.

Which actions are offered for each fixture is the discovery table of the upstream folder's
actions/action_test.yaml. Every action is run on every fixture: an offered one must change exactly the
command annotation (the merge patch Argo CD would send) to the JSON the plugin writes, read back by
`mlrollout.api.commands.parse`; one not offered must fail with a message and change nothing.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import yaml
from tests.support import argocd

from mlrollout.api.commands import ANNOTATION, Command, parse
from mlrollout.argocdgen import ACTIONS

FOLDER = argocd.CUSTOMIZATION
ACTION_TESTS = yaml.safe_load((FOLDER / "actions" / "action_test.yaml").read_text())
DISCOVERY = {t["inputPath"].removeprefix("../"): t["result"] for t in ACTION_TESTS["discoveryTests"]}
MODES = ("argocd-cm", "builtin")
UNDO_PARAMS = ["1", "2", "99", "0", "-1", "2.5", "two", ""]


def fixture(path: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((FOLDER / path).read_text())
    return obj


def run(cases: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """mode -> case id -> Argo CD's answer; both modes must agree."""
    by_mode = {
        "argocd-cm": argocd.evaluate(cases, config_map=argocd.CONFIG_MAP.read_text()),
        "builtin": argocd.evaluate(cases, builtin=argocd.customization()),
    }
    return {mode: {a["id"]: a for a in answers} for mode, answers in by_mode.items()}


def every_action() -> list[tuple[str, dict[str, str] | None]]:
    calls: list[tuple[str, dict[str, str] | None]] = [(name, None) for name in ACTIONS]
    return calls + [("undo", {"toRevision": value}) for value in UNDO_PARAMS]


@pytest.fixture(scope="module")
def answers() -> dict[str, dict[str, dict[str, Any]]]:
    return run([argocd.case(p, fixture(p), discovery=True, actions=every_action()) for p in DISCOVERY])


def offered(path: str) -> set[str]:
    return {a["name"] for a in DISCOVERY[path] if not a.get("disabled")}


def test_every_fixture_has_a_discovery_test() -> None:
    assert set(DISCOVERY) == {f"testdata/{p.name}" for p in (FOLDER / "testdata").glob("*.yaml")}
    for path, expected in DISCOVERY.items():
        assert sorted(a["name"] for a in expected) == sorted(ACTIONS), path


def normal(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sorted by name, `disabled` spelled out (Argo CD omits it when false)."""
    return sorted(({**a, "disabled": bool(a.get("disabled"))} for a in actions), key=lambda a: str(a["name"]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", sorted(DISCOVERY))
def test_discovery(answers: dict[str, dict[str, dict[str, Any]]], mode: str, path: str) -> None:
    got = answers[mode][path]["discovery"]
    assert "error" not in got, got
    assert normal(got["actions"]) == normal(DISCOVERY[path])


def expected_command(obj: dict[str, Any], action: str, to_revision: int | None = None) -> Command:
    verb = ACTIONS[action]
    return Command(id=f"argocd-{verb}-{obj['metadata']['resourceVersion']}", verb=verb, to_revision=to_revision)


def only_the_annotation(answer: dict[str, Any], command: Command) -> None:
    """One patched object whose merge patch sets the command annotation, as the plugin writes it."""
    assert "error" not in answer, answer["error"]
    [impacted] = answer["impacted"]
    assert impacted["operation"] == "patch"
    value = command.annotation_value()
    assert impacted["mergePatch"] == {"metadata": {"annotations": {ANNOTATION: value}}}
    assert not impacted["touchesStatus"]
    assert parse(impacted["object"]["metadata"]["annotations"][ANNOTATION]) == command


def nothing_changed(answer: dict[str, Any], action: str) -> str:
    assert not answer.get("impacted"), answer
    message = str(answer.get("error", ""))
    assert message.startswith(f"{action}: ") and message.endswith("; nothing was changed"), message
    return message


def known_revisions(obj: dict[str, Any]) -> set[int]:
    """Revisions undo can redeploy: status.revisions that keep their template (the API's definition)."""
    return {r["number"] for r in obj["status"].get("revisions") or [] if r.get("template")}


UNDOABLE = sorted(path for path in DISCOVERY if "undo" in offered(path))


def test_some_fixtures_offer_undo() -> None:
    assert len(UNDOABLE) >= 3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("path", sorted(DISCOVERY))
def test_each_action_on_each_fixture(
    answers: dict[str, dict[str, dict[str, Any]]], mode: str, action: str, path: str
) -> None:
    answer = answers[mode][path]["actions"][list(ACTIONS).index(action)]
    assert answer["name"] == action
    if action in offered(path):
        only_the_annotation(answer, expected_command(fixture(path), action))
    else:
        nothing_changed(answer, action)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", UNDO_PARAMS)
@pytest.mark.parametrize("path", UNDOABLE)
def test_undo_to_a_revision(answers: dict[str, dict[str, dict[str, Any]]], mode: str, value: str, path: str) -> None:
    answer = answers[mode][path]["actions"][len(ACTIONS) + UNDO_PARAMS.index(value)]
    obj = fixture(path)
    known = known_revisions(obj)
    if value == "":  # Argo CD's form sends an empty field: the default target
        only_the_annotation(answer, expected_command(obj, "undo"))
    elif value.isdigit() and int(value) in known:
        only_the_annotation(answer, expected_command(obj, "undo", int(value)))
    elif value.isdigit() and int(value) >= 1:
        listed = ", ".join(str(n) for n in sorted(known))
        assert (
            nothing_changed(answer, "undo")
            == f"undo: revision {value} is not known (known: {listed}); nothing was changed"
        )
    else:
        assert "toRevision must be a revision number (1 or more), got " + value in nothing_changed(answer, "undo")


def with_status(**status: Any) -> dict[str, Any]:
    obj = fixture("testdata/real-canary.yaml")
    obj["status"] = status
    return obj


BAD: list[tuple[str, dict[str, Any]]] = [
    ("status a string", fixture("testdata/real-canary.yaml") | {"status": "broken"}),
    ("status a list", fixture("testdata/real-canary.yaml") | {"status": [1, 2]}),
    ("candidate a string", with_status(phase="Progressing", candidate="v2", currentStep={"index": 0, "kind": "x"})),
    ("heldBack a string", with_status(phase="Degraded", heldBack="2")),
    ("revisions of the wrong shape", with_status(phase="Healthy", stable={"number": "x"}, revisions=["a", {}, 3])),
    ("history of the wrong shape", with_status(phase="Healthy", stable={"number": 1}, history="promoted")),
    ("pausedByCommand a string", with_status(phase="Healthy", pausedByCommand="true")),
]


@pytest.fixture(scope="module")
def bad_answers() -> dict[str, dict[str, dict[str, Any]]]:
    return run([argocd.case(name, obj, discovery=True, actions=every_action()) for name, obj in BAD])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "obj"), BAD, ids=[name for name, _ in BAD])
def test_bad_input_offers_nothing_and_changes_nothing(
    bad_answers: dict[str, dict[str, dict[str, Any]]], mode: str, name: str, obj: dict[str, Any]
) -> None:
    answer = bad_answers[mode][name]
    assert "error" not in answer["discovery"], answer["discovery"]
    assert [a["name"] for a in answer["discovery"]["actions"] if not a.get("disabled")] == []
    for call in answer["actions"]:
        nothing_changed(call, call["name"])


@pytest.fixture(scope="module")
def id_answers() -> dict[str, dict[str, dict[str, Any]]]:
    canary = fixture("testdata/real-canary.yaml")
    later = copy.deepcopy(canary)
    later["metadata"]["resourceVersion"] = "42301"
    commanded = copy.deepcopy(canary)
    commanded["metadata"]["annotations"] = {ANNOTATION: '{"id":"an-earlier-one","verb":"pause"}', "team": "ml"}
    no_version = copy.deepcopy(canary)
    del no_version["metadata"]["resourceVersion"]
    cases = [
        argocd.case(name, obj, actions=[("pause", None), ("abort", None)])
        for name, obj in (("canary", canary), ("later", later), ("commanded", commanded), ("no version", no_version))
    ]
    return run(cases)


def annotation(answer: dict[str, Any], index: int) -> dict[str, Any]:
    value = answer["actions"][index]["impacted"][0]["mergePatch"]["metadata"]["annotations"][ANNOTATION]
    body: dict[str, Any] = json.loads(value)
    return body


@pytest.mark.parametrize("mode", MODES)
def test_ids_differ_per_verb_and_per_version_of_the_object(
    id_answers: dict[str, dict[str, dict[str, Any]]], mode: str
) -> None:
    got = id_answers[mode]
    assert [annotation(got["canary"], i)["id"] for i in (0, 1)] == ["argocd-pause-42300", "argocd-abort-42300"]
    assert annotation(got["later"], 0)["id"] == "argocd-pause-42301"
    # An earlier command is replaced, other annotations are kept (the merge patch names only ours).
    assert annotation(got["commanded"], 0)["id"] == "argocd-pause-42300"
    assert got["commanded"]["actions"][0]["impacted"][0]["object"]["metadata"]["annotations"]["team"] == "ml"


@pytest.mark.parametrize("mode", MODES)
def test_without_a_resource_version_the_id_comes_from_the_clock(
    id_answers: dict[str, dict[str, dict[str, Any]]], mode: str
) -> None:
    command = parse(json.dumps(annotation(id_answers[mode]["no version"], 0)))
    prefix = "argocd-pause-t"
    assert command.id.startswith(prefix) and command.verb == "pause"
    assert abs(int(command.id.removeprefix(prefix)) - time.time()) < 600


def never_promoted_since() -> dict[str, Any]:
    """Stable revision 1 and revisions 2 and 3 known, but neither was ever promoted: undo has no default."""
    obj = fixture("testdata/real-aborted.yaml")
    obj["status"]["history"] = [h for h in obj["status"]["history"] if h["number"] == 1]
    return obj


@pytest.mark.parametrize("mode", MODES)
def test_undo_without_an_earlier_promoted_revision_asks_for_one(mode: str) -> None:
    obj = never_promoted_since()
    assert obj["status"]["stable"]["number"] == 1 and known_revisions(obj) == {1, 2, 3}
    calls: list[tuple[str, dict[str, str] | None]] = [("undo", None), ("undo", {"toRevision": "2"})]
    [answer] = run([argocd.case("undo", obj, discovery=True, actions=calls)])[mode].values()
    assert "undo" in {a["name"] for a in answer["discovery"]["actions"] if not a.get("disabled")}
    default, to_two = answer["actions"]
    assert nothing_changed(default, "undo") == (
        "undo: no earlier promoted revision to go back to; give toRevision (known: 1, 2, 3); nothing was changed"
    )
    only_the_annotation(to_two, expected_command(obj, "undo", 2))
