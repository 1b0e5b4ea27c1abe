"""`kubectl mltask run`'s pure parts: reading the file, the Pipeline built from it and the
--param values, what is refused (exit 2, before any API call) and what is printed; the API
calls are a stand-in session; no cluster."""

from __future__ import annotations

import copy
import io
import re
from typing import Any

import pytest
import yaml

from harness.cases import Case
from harness.tasks import REPO
from mltask_operator import cli, kinds
from mltask_operator.cli import errors, runs

EXAMPLE = REPO / "examples" / "pipeline-params.yaml"
SOURCE = "pipeline.yaml"


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def values(body: dict[str, Any]) -> dict[str, str | None]:
    return {p["name"]: p.get("value") for p in body["spec"]["parameters"]}


# ------------------------------------------------------------------------------- --param

PARAMS = [
    Case("name and value", "learningRate=0.01", ("learningRate", "0.01")),
    Case("an empty value", "note=", ("note", "")),
    Case("= in the value", "expr=a=b", ("expr", "a=b")),
    Case("no =", "epochs", error="'epochs' is not NAME=VALUE"),
    Case("no name", "=5", error="'=5' is not NAME=VALUE"),
]


@pytest.mark.parametrize("case", PARAMS, ids=lambda c: c.name)
def test_parse_param(case: Case) -> None:
    if case.error:
        with pytest.raises(ValueError, match=re.escape(case.error)):
            runs.parse_param(case.given)
    else:
        assert runs.parse_param(case.given) == case.expected


# --------------------------------------------------------------------------------- file

FILES = [
    Case("two documents", EXAMPLE.read_text() + "\n---\n" + EXAMPLE.read_text(),
         error="pipeline.yaml holds 2 objects: run takes a file of one Pipeline"),
    Case("nothing", "# only a comment\n", error="pipeline.yaml holds 0 objects"),
    Case("a list", "- a\n- b\n", error="pipeline.yaml holds a list, not a Pipeline"),
    Case("an MLTask", "apiVersion: mltask.dev/v1alpha1\nkind: MLTask\n",
         error="holds a MLTask (apiVersion mltask.dev/v1alpha1), not a Pipeline"),
    Case("another version", "apiVersion: mltask.dev/v1\nkind: Pipeline\n",
         error="holds a Pipeline (apiVersion mltask.dev/v1), not a Pipeline (apiVersion "
         "mltask.dev/v1alpha1)"),
    Case("no kind", "a: 1\n", error="holds a object without kind"),
]


@pytest.mark.parametrize("case", FILES, ids=lambda c: c.name)
def test_load_pipeline_takes_one_pipeline(case: Case) -> None:
    with pytest.raises(errors.UsageError, match=re.escape(case.error)):
        runs.load_pipeline(case.given, SOURCE)


def test_load_pipeline_of_the_example() -> None:
    assert runs.load_pipeline(EXAMPLE.read_text(), SOURCE) == example()


def test_bad_yaml_is_one_line() -> None:
    with pytest.raises(errors.UsageError) as e:
        runs.load_pipeline("a: [1\nb: 2\n", SOURCE)
    assert str(e.value).startswith("pipeline.yaml is not valid YAML: ")
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------- the new object


def test_overrides_set_values_and_the_name_is_generated() -> None:
    obj = example()
    kept = copy.deepcopy(obj)
    body = runs.run_body(obj, [("learningRate", "0.01"), ("epochs", "20")], None, SOURCE)
    assert obj == kept, "the file's object is left as it is"
    assert body["metadata"] == {"generateName": "digits-tuned-"}
    assert values(body) == {"learningRate": "0.01", "epochs": "20", "hiddenUnits": None,
                            "pruneFraction": None, "seed": None, "minAccuracy": None}
    defaults = {p["name"]: p["default"] for p in body["spec"]["parameters"]}
    assert defaults["learningRate"] == "0.001", "the default stays"
    assert body["spec"]["tasks"] == obj["spec"]["tasks"], "placeholders stay: the operator " \
        "substitutes them in each child"
    assert (body["apiVersion"], body["kind"]) == ("mltask.dev/v1alpha1", "Pipeline")


def test_name_gives_an_exact_name() -> None:
    obj = example()
    obj["metadata"]["generateName"] = "x-"
    body = runs.run_body(obj, [], "digits-lr01", SOURCE)
    assert body["metadata"] == {"name": "digits-lr01"}
    assert values(body) == dict.fromkeys(values(obj)), "no override: the defaults"


def test_what_the_api_server_set_is_dropped() -> None:
    obj = example()
    obj["metadata"].update({
        "namespace": "team-a", "uid": "u-1", "resourceVersion": "42", "generation": 3,
        "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": [{"manager": "kubectl"}],
        "labels": {"team": "vision"},
        "annotations": {"note": "kept",
                        "kubectl.kubernetes.io/last-applied-configuration": "{}"}})
    obj["status"] = {"status": "completed", "progress": "3/3"}
    body = runs.run_body(obj, [], None, SOURCE)
    assert body["metadata"] == {"namespace": "team-a", "generateName": "digits-tuned-",
                                "labels": {"team": "vision"}, "annotations": {"note": "kept"}}
    assert "status" not in body


def test_a_file_generate_name_is_used_when_it_has_no_name() -> None:
    obj = example()
    obj["metadata"] = {"generateName": "sweep-"}
    assert runs.run_body(obj, [], None, SOURCE)["metadata"] == {"generateName": "sweep-"}


REFUSED = [
    Case("an unknown parameter names it and lists the declared ones",
         ([("learningRate", "0.01"), ("nope", "1")], None),
         error="--param nope: the Pipeline of pipeline.yaml has no parameter nope; its "
         "parameters are learningRate, epochs, hiddenUnits, pruneFraction, seed, minAccuracy"),
    Case("a value not of the parameter's type", ([("epochs", "ten")], None),
         error="parameter epochs: value 'ten' is not an int, e.g. 5"),
    Case("a float", ([("learningRate", "fast")], None),
         error="parameter learningRate: value 'fast' is not a float"),
    Case("a value not in the enum", ([("pruneFraction", "0.3")], None),
         error="parameter pruneFraction: value '0.3' is not one of its enum (0, 0.25, 0.5, "
         "0.75)"),
    Case("a value too long", ([("hiddenUnits", "1" * 1025)], None),
         error="spec.parameters[2].value: String should have at most 1024 characters"),
    Case("the same parameter twice", ([("epochs", "5"), ("epochs", "6")], None),
         error="--param epochs is given twice"),
    Case("a generated name too long for the children's names",
         ([], None, "a-pipeline-name-long-enough-for-it"),
         error="the generated names a-pipeline-name-long-enough-for-it-<5 random characters> "
         "would have 40 characters, more than the 37 of the pipeline's name, so that "
         "<pipeline>-preprocess names its MLTask: give a shorter --name, or shorten "
         "metadata.name"),
    Case("no name to generate names from", ([], None, ""),
         error="has no metadata.name to generate names from: give --name NAME"),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_refused(case: Case) -> None:
    params, name, *file_name = case.given
    obj = example()
    if file_name:
        obj["metadata"]["name"] = file_name[0]
    with pytest.raises(errors.UsageError, match=re.escape(case.error)):
        runs.run_body(obj, params, name, SOURCE)


def test_no_parameters_declared() -> None:
    obj = example()
    del obj["spec"]["parameters"]
    for t in obj["spec"]["tasks"]:  # no placeholders left
        t["spec"].pop("config", None)
        t["spec"]["steps"]["run"].pop("env", None)
        t.pop("when", None)
    assert runs.run_body(obj, [], None, SOURCE)["metadata"]["generateName"] == "digits-tuned-"
    with pytest.raises(errors.UsageError, match="it declares no parameters"):
        runs.run_body(obj, [("epochs", "5")], None, SOURCE)


def test_a_bad_file_names_the_field() -> None:
    obj = example()
    obj["spec"]["tasks"][1]["spec"]["type"] = "trainin"
    obj["spec"]["parameters"][0]["bogus"] = 1
    with pytest.raises(errors.UsageError) as e:
        runs.run_body(obj, [], None, SOURCE)
    assert str(e.value) == (
        "the Pipeline of pipeline.yaml is not valid: spec.parameters[0].bogus: Extra inputs "
        "are not permitted; spec.tasks[1].spec.type: Input should be 'preprocessing', "
        "'training' or 'optimization'")


def test_a_placeholder_naming_no_parameter_is_refused() -> None:
    obj = example()
    obj["spec"]["tasks"][0]["spec"]["config"]["parameters"]["seed"] = "$(params.sed)"
    with pytest.raises(errors.UsageError,
                       match="task preprocess: config.parameters.seed references unknown "
                       "parameter sed"):
        runs.run_body(obj, [], None, SOURCE)


# ------------------------------------------------------------------------------ the command


class RunSession:
    """A stand-in for the API: `create` records what it was sent and answers as the server
    would (a generated name), or raises `error`."""

    def __init__(self, namespace: str = "ctx-ns", error: Exception | None = None) -> None:
        self.namespace = namespace
        self.error = error
        self.sent: list[tuple[kinds.Kind, dict[str, Any], bool]] = []

    def create(self, kind: kinds.Kind, body: dict[str, Any],
               dry_run: bool = False) -> dict[str, Any]:
        self.sent.append((kind, copy.deepcopy(body), dry_run))
        if self.error:
            raise self.error
        meta = body["metadata"]
        return {**body, "metadata": {**meta, "name": meta.get("name")
                                     or f"{meta['generateName']}x7k2p"}}


@pytest.fixture
def session(monkeypatch) -> RunSession:
    s = RunSession()
    monkeypatch.setattr(cli, "connect", lambda *a: s)
    return s


def test_run_prints_the_created_name_and_each_override(session: RunSession, capsys) -> None:
    code = cli.main(["run", "-f", str(EXAMPLE), "--param", "learningRate=0.01",
                     "--param", "epochs=20"])
    out = capsys.readouterr()
    assert (code, out.err) == (0, "")
    assert out.out == ("pipeline.mltask.dev/digits-tuned-x7k2p created\n"
                       "  learningRate=0.01\n"
                       "  epochs=20\n")
    [(kind, body, dry_run)] = session.sent
    assert (kind, dry_run) == (kinds.PIPELINE, False)
    assert body["metadata"] == {"generateName": "digits-tuned-", "namespace": "ctx-ns"}
    assert values(body)["learningRate"] == "0.01"


NAMESPACES = [
    Case("the context's", ([], None), "ctx-ns"),
    Case("the file's", ([], "from-file"), "from-file"),
    Case("-n over the file's", (["-n", "given"], "from-file"), "given"),
    Case("-n after the command", (["run", "-n", "given"], None), "given"),
]


@pytest.mark.parametrize("case", NAMESPACES, ids=lambda c: c.name)
def test_the_namespace(case: Case, session: RunSession, tmp_path, capsys) -> None:
    flags, in_file = case.given
    obj = example()
    if in_file:
        obj["metadata"]["namespace"] = in_file
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(obj))
    argv = [*flags, "-f", str(path)] if flags[:1] == ["run"] else [*flags, "run", "-f",
                                                                   str(path)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert session.sent[0][1]["metadata"]["namespace"] == case.expected


def test_dry_run_prints_the_yaml_and_creates_nothing(session: RunSession, capsys) -> None:
    code = cli.main(["run", "-f", str(EXAMPLE), "--param", "seed=7", "--dry-run",
                     "--name", "digits-seed7"])
    out = capsys.readouterr()
    assert code == 0
    [(_, sent, dry_run)] = session.sent
    assert dry_run is True, "the API server checks it, and stores nothing"
    printed = yaml.safe_load(out.out)
    assert printed == sent
    assert printed["metadata"] == {"name": "digits-seed7", "namespace": "ctx-ns"}
    assert values(printed)["seed"] == "7"
    assert list(printed) == ["apiVersion", "kind", "metadata", "spec"], "the file's order"
    assert out.err == ("pipeline.mltask.dev/digits-seed7 checked by the API server (server "
                       "dry run): nothing created in namespace ctx-ns\n")


def test_dry_run_of_a_generated_name(session: RunSession, capsys) -> None:
    assert cli.main(["run", "-f", str(EXAMPLE), "--dry-run"]) == 0
    assert capsys.readouterr().err.startswith("pipeline.mltask.dev/digits-tuned-<random> "
                                              "checked by the API server")


def test_stdin(session: RunSession, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLE.read_text()))
    assert cli.main(["run", "-f", "-", "--param", "epochs=3"]) == 0
    assert capsys.readouterr().out.startswith("pipeline.mltask.dev/digits-tuned-x7k2p created")
    assert values(session.sent[0][1])["epochs"] == "3"


USAGE = [
    Case("unknown parameter", ["--param", "nope=1"],
         "kubectl mltask run: --param nope: the Pipeline of {f} has no parameter nope; its "
         "parameters are learningRate, epochs, hiddenUnits, pruneFraction, seed, minAccuracy\n"),
    Case("bad value", ["--param", "epochs=ten"],
         "kubectl mltask run: parameter epochs: value 'ten' is not an int, e.g. 5\n"),
]


@pytest.mark.parametrize("case", USAGE, ids=lambda c: c.name)
def test_refused_with_exit_2_before_connecting(case: Case, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "connect", lambda *a: pytest.fail("must not connect"))
    assert cli.main(["run", "-f", str(EXAMPLE), *case.given]) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", case.expected.format(f=EXAMPLE))


def test_a_missing_file_exit_2(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "connect", lambda *a: pytest.fail("must not connect"))
    assert cli.main(["run", "-f", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kubectl mltask run: cannot read {tmp_path / 'nope.yaml'}: ")
    assert err.count("\n") == 1


ARGPARSE_USAGE = [
    Case("no -f", ["run"], "the following arguments are required: -f/--filename"),
    Case("--param without =", ["run", "-f", "x", "--param", "epochs"],
         "argument --param: 'epochs' is not NAME=VALUE"),
]


@pytest.mark.parametrize("case", ARGPARSE_USAGE, ids=lambda c: c.name)
def test_argparse_usage_errors(case: Case, monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "connect", lambda *a: pytest.fail("must not connect"))
    assert cli.main(case.given) == 2
    assert case.expected in capsys.readouterr().err


def test_a_name_taken_says_so_in_one_line(monkeypatch, capsys) -> None:
    taken = errors.ApiCallError(errors.api_error_message(
        409, 'pipelines.mltask.dev "digits-lr01" already exists', "create", kinds.PIPELINE,
        "digits-lr01", "ml"), 409)
    monkeypatch.setattr(cli, "connect", lambda *a: RunSession(error=taken))
    assert cli.main(["run", "-f", str(EXAMPLE), "--name", "digits-lr01"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == ("error: pipeline digits-lr01 already exists in namespace ml "
                       "(AlreadyExists): choose another --name, or leave --name out for a "
                       "generated name\n")


CREATE_ERRORS = [
    Case("409 of a name", (409, "x", "create", kinds.PIPELINE, "p", "ml"),
         "pipeline p already exists in namespace ml (AlreadyExists)"),
    Case("409 of a generated name", (409, "taken", "create", kinds.PIPELINE, None, "ml"),
         "cannot create pipelines.mltask.dev in namespace ml: the generated name is taken: "
         "taken"),
    Case("404: no namespace", (404, 'namespaces "nope" not found', "create", kinds.PIPELINE,
                               "p", "nope"),
         "cannot create pipelines.mltask.dev 'p': namespace nope not found"),
    Case("404: no CRD", (404, "the server could not find the requested resource", "create",
                         kinds.PIPELINE, "p", "ml"),
         "the server has no pipelines.mltask.dev (are the CRDs installed?): the server could "
         "not find the requested resource"),
    Case("422", (422, 'Pipeline.mltask.dev "p-x" is invalid: [spec.parameters[1].value: ...]',
                 "create", kinds.PIPELINE, None, "ml"),
         "the API server refused to create pipelines.mltask.dev in namespace ml: "
         'Pipeline.mltask.dev "p-x" is invalid: [spec.parameters[1].value: ...]'),
]


@pytest.mark.parametrize("case", CREATE_ERRORS, ids=lambda c: c.name)
def test_create_errors(case: Case) -> None:
    assert errors.api_error_message(*case.given) == case.expected


def test_the_servers_message_is_one_line() -> None:
    assert errors.server_message('{"message": "is invalid:\\n  a\\n  b\\n"}', "Invalid") == (
        "is invalid: a b")
