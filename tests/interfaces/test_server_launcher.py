"""`coulisse serve`'s launcher: the task read from the checkpoint's files, and TEI's environment names as a
fallback below the command line and COULISSE_* (no model is loaded here)."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from coulisse.interfaces.server.detect import detect_task
from coulisse.interfaces.server.limits import BATCH
from coulisse.interfaces.server.tei_env import with_tei_environment


@pytest.mark.parametrize(("config", "task"), [
    ({"architectures": ["TFCamembertForSequenceClassification"]}, "text-classification"),
    ({"architectures": ["BertForTokenClassification"]}, "token-classification"),
    ({"architectures": ["DebertaV2ForQuestionAnswering"]}, "question-answering"),
    ({"architectures": ["XLMRobertaForMaskedLM"]}, "fill-mask"),
    ({"architectures": ["BertModel"]}, "feature-extraction"),
    ({"architectures": ["CamembertForSequenceClassification"],
      "id2label": {"0": "ENTAILMENT", "1": "neutral", "2": "contradiction"}}, "zero-shot-classification"),
    ({}, "text-classification"),
])
def test_task_from_architectures(tmp_path, config, task):
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert detect_task(tmp_path) == task


def test_sentence_transformers_folder_is_feature_extraction(minilm_dir, tf_camembert_dir):
    assert detect_task(minilm_dir) == "feature-extraction"
    assert detect_task(tf_camembert_dir) == "text-classification"


@click.command()
@click.option("--port", type=int, default=8080, envvar="COULISSE_PORT")
@click.option("--api-key", default=None, envvar="COULISSE_API_KEY")
def probe(port, api_key):
    click.echo(json.dumps(with_tei_environment(click.get_current_context(), {"port": port, "api_key": api_key})))


@pytest.mark.parametrize(("args", "env", "expected"), [
    ([], {}, {"port": 8080, "api_key": None}),
    ([], {"PORT": "3000", "API_KEY": "k"}, {"port": 3000, "api_key": "k"}),
    ([], {"PORT": "3000", "COULISSE_PORT": "4000"}, {"port": 4000, "api_key": None}),  # COULISSE_* wins
    (["--port", "5000"], {"PORT": "3000"}, {"port": 5000, "api_key": None}),  # the command line wins
])
def test_tei_environment_is_the_last_fallback(monkeypatch, args, env, expected):
    for name in ("PORT", "API_KEY", "COULISSE_PORT", "COULISSE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(probe, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected


def test_a_bad_tei_value_names_the_variable(monkeypatch):
    monkeypatch.delenv("COULISSE_PORT", raising=False)
    result = CliRunner().invoke(probe, [], env={"PORT": "eighty"})
    assert result.exit_code == 2 and "from TEI's PORT" in result.output


def test_several_models_pair_their_options_by_position():
    from coulisse.interfaces.server.command import served_models

    assert served_models(["a", "b"], [], [], ["x", "y"]) == (["a", "b"], [None, None], ["x", "y"])
    assert served_models([], ["a"], ["fill-mask"], []) == (["a"], ["fill-mask"], [None])  # TEI's --model-id
    assert served_models([], [], [], []) == ([None], [None], [None])  # the task's default model
    with pytest.raises(click.UsageError, match="1 --served-model-name for 2 --model"):
        served_models(["a", "b"], [], [], ["x"])
    with pytest.raises(click.UsageError, match="differ"):
        served_models(["a"], ["b"], [], [])


@pytest.mark.parametrize(("names", "message"), [
    (["a", "embed"], "starts like the server's route /embed"),
    (["v1/x", "b"], "starts like the server's route /v1"),
    (["a", "a/"], "two models are served as 'a'"),
    (["a", "/"], "is empty"),
])
def test_served_names_must_not_shadow_a_route(names, message):
    from coulisse.errors import InputError
    from coulisse.interfaces.server.routing import check_names

    with pytest.raises(InputError, match=message):
        check_names(names, {"embed", "v1", "predict"})
    check_names(["org/model", "other"], {"embed", "v1"})


@pytest.mark.parametrize(("env", "message"), [
    # A folder with a space is one model (click would split the variable on whitespace)...
    ({"COULISSE_MODEL": "/models/Mon modèle", "COULISSE_SERVED_MODEL_NAME": "a, b"},
     "2 --served-model-name for 1 --model"),
    # ... and commas separate several, blanks around them dropped.
    ({"COULISSE_MODEL": "/models/a , /models/b", "COULISSE_SERVED_MODEL_NAME": "x"},
     "1 --served-model-name for 2 --model"),
    ({"COULISSE_MODEL": "/models/a,/models/b", "COULISSE_TASK": "fill-mask"}, "1 --task for 2 --model"),
])
def test_model_variables_are_comma_separated(monkeypatch, env, message):
    from coulisse.interfaces.cli import cli

    for name in ("COULISSE_MODEL", "COULISSE_TASK", "COULISSE_SERVED_MODEL_NAME", "MODEL_ID"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["serve"], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_variable_lists_drop_blank_items():
    from coulisse.interfaces.options import EnvChoice

    choice = EnvChoice(["fill-mask", "feature-extraction"])
    assert choice.split_envvar_value(" fill-mask,feature-extraction ,") == ["fill-mask", "feature-extraction"]


@pytest.mark.parametrize("command", ["serve", "studio"])
def test_a_port_taken_or_out_of_range_is_refused_before_the_model_loads(command, tmp_path, monkeypatch):
    """A port another process listens on, or one past 65535: one line, exit 1 or 2, before any model is looked
    for (the model here does not exist, and is never reported); not uvicorn's traceback after the load."""
    import socket

    from coulisse.interfaces.cli import cli

    monkeypatch.delenv("COULISSE_PORT", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    model = ["-m", str(tmp_path / "no-such-model")]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, [command, *model, "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use; another process listens there: "
        "pass another --port, or stop it."]
    result = CliRunner().invoke(cli, [command, *model, "--port", "70000"])
    assert result.exit_code == 2 and "70000 is not in the range 0<=x<=65535" in result.output, result.output
    assert "no-such-model" not in result.output


@pytest.mark.parametrize(("args", "hint"), [(["-m", "tblard/tf-allocine"], True),
                                            (["-m", "tblard/tf-allocine", "--task", "text-classification"], True),
                                            (["-m", "someone/else"], False)])
def test_the_course_model_unreachable_points_to_the_bundled_one_as_classify_does(args, hint, tmp_path,
                                                                                 monkeypatch):
    """`coulisse serve --model tblard/tf-allocine` with no Hub and an empty cache: the one line says the
    bundled French model runs, as `classify -m tblard/tf-allocine` and `pipeline()` say (the task is read from
    the checkpoint, so serve failed before the pipeline could add it); another model gets no such hint."""
    from coulisse.interfaces.cli import cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("COULISSE_MODEL", "COULISSE_TASK", "MODEL_ID", "COULISSE_PORT", "PORT"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(cli, ["serve", *args, "--port", "0"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: HubUnreachableError: "), result.output
    said = "Offline, the bundled French sentiment model runs: --model coulisse/mini-allocine" in lines[0]
    assert said == hint, lines[0]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    import coulisse

    return coulisse.pipeline("feature-extraction", model=str(minilm_dir))


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["--auto-truncate", "false"], {}, {"auto_truncate": False}),  # TEI's launcher syntax (clap, num_args 0..=1)
    (["--auto-truncate=false"], {}, {"auto_truncate": False}),
    (["--auto-truncate"], {"AUTO_TRUNCATE": "false"}, {"auto_truncate": True}),
    (["--no-auto-truncate"], {}, {"auto_truncate": False}),
    ([], {}, {"auto_truncate": True, "max_batch_requests": BATCH.max_batch_requests, "pooling": "mean"}),
    ([], {"AUTO_TRUNCATE": "false", "MAX_BATCH_REQUESTS": "7", "POOLING": "cls"},
     {"auto_truncate": False, "max_batch_requests": 7, "pooling": "cls"}),
    ([], {"AUTO_TRUNCATE": "false", "COULISSE_AUTO_TRUNCATE": "true"}, {"auto_truncate": True}),
])
def test_tei_launcher_syntax_and_variables(monkeypatch, minilm, args, env, expected):
    """What the server runs with, read from the app `coulisse serve` hands to uvicorn (the model is loaded once
    by the fixture; nothing listens)."""
    from coulisse.interfaces.cli import cli
    from coulisse.interfaces.server import command

    for name in ("COULISSE_AUTO_TRUNCATE", "AUTO_TRUNCATE", "COULISSE_MAX_BATCH_REQUESTS", "MAX_BATCH_REQUESTS",
                 "COULISSE_POOLING", "POOLING", "COULISSE_PORT", "PORT"):
        monkeypatch.delenv(name, raising=False)
    apps = []

    class Captured:
        def __init__(self, config, drain):
            apps.append(config.app)

        def run(self, sockets=None):
            pass

    loaded = []
    monkeypatch.setattr(command, "load_pipeline", lambda *a, **k: loaded.append(k) or minilm)
    monkeypatch.setattr("coulisse.interfaces.server.detect.served_task", lambda task, *a: task or "feature-extraction")
    monkeypatch.setattr("coulisse.interfaces.server.protocol.DrainingServer", Captured)
    monkeypatch.setattr(command.signal, "signal", lambda *a: None)
    result = CliRunner().invoke(cli, ["serve", "-m", "minilm", "--port", "0", *args], env=env)
    assert result.exit_code == 0, result.output
    service = apps[0].state.service
    # --max-batch-requests is the pipeline's batch size, which the server's batcher then reads
    got = {"auto_truncate": service.settings.auto_truncate, "max_batch_requests": loaded[0]["max_batch_size"],
           "pooling": service.pooling_mode}
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(("args", "warned"), [
    (["--host", "0.0.0.0"], True),
    (["--host", "::"], True),
    (["--host", "0.0.0.0", "--api-key", "k"], False),
    (["--host", "127.0.0.1"], False),
    (["--host", "::1"], False),
    (["--host", "localhost"], False),
])
def test_listening_beyond_this_machine_without_a_key_is_a_warning(monkeypatch, minilm, caplog, args, warned):
    """TEI listens on every interface without a key by default; coulisse listens on 127.0.0.1, and says so when
    told to answer other machines with no key (the studio refuses a host that is not loopback outright)."""
    import logging

    from coulisse.interfaces.cli import cli
    from coulisse.interfaces.server import command

    class Captured:
        def __init__(self, config, drain):
            pass

        def run(self, sockets=None):
            pass

    monkeypatch.setattr(command, "load_pipeline", lambda *a, **k: minilm)
    monkeypatch.setattr(command, "check_listen", lambda host, port: None)  # no interface needed
    monkeypatch.setattr("coulisse.interfaces.server.detect.served_task", lambda task, *a: task or "feature-extraction")
    monkeypatch.setattr("coulisse.interfaces.server.protocol.DrainingServer", Captured)
    monkeypatch.setattr(command.signal, "signal", lambda *a: None)
    monkeypatch.delenv("COULISSE_API_KEY", raising=False)
    monkeypatch.delenv("API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="coulisse"):
        result = CliRunner().invoke(cli, ["serve", "-m", "minilm", "--port", "0", *args])
    assert result.exit_code == 0, result.output
    said = [r.getMessage() for r in caplog.records if "without --api-key" in r.getMessage()]
    assert bool(said) is warned, said


def _serve_captured(monkeypatch, minilm, args, env):
    """`coulisse serve` up to uvicorn's start, with the fixture's model; the uvicorn configs it built."""
    from coulisse.interfaces.cli import cli
    from coulisse.interfaces.server import command

    configs = []

    class Captured:
        def __init__(self, config, drain):
            configs.append(config)

        def run(self, sockets=None):
            pass

    for name in ("COULISSE_PORT", "PORT", "HF_TOKEN", "HF_HUB_CACHE"):
        monkeypatch.setenv(name, "")  # recorded, so that what serve sets (--hf-token...) is undone after the test
        monkeypatch.delenv(name)
    monkeypatch.setattr(command, "load_pipeline", lambda *a, **k: minilm)
    monkeypatch.setattr(command, "check_listen", lambda host, port: None)
    monkeypatch.setattr("coulisse.interfaces.server.detect.served_task", lambda task, *a: task or "feature-extraction")
    monkeypatch.setattr("coulisse.interfaces.server.protocol.DrainingServer", Captured)
    monkeypatch.setattr(command.signal, "signal", lambda *a: None)
    return CliRunner().invoke(cli, ["serve", "-m", "minilm", *args], env=env), configs


@pytest.mark.parametrize(("env", "port"), [({}, 8080), ({"PORT": "9090"}, 9090)])
def test_a_kubernetes_service_link_in_coulisse_port_is_no_port(monkeypatch, minilm, caplog, env, port):
    """Kubernetes sets COULISSE_PORT=tcp://10.0.0.7:8080 in every pod of the namespace of a Service named
    coulisse: the server refused to start ("not a valid integer range", exit 2: a crash loop), TEI's PORT
    notwithstanding (audit 44). The link is no setting, said once; typed as --port it is still refused."""
    import logging

    link = {"COULISSE_PORT": "tcp://10.0.0.7:8080"}
    with caplog.at_level(logging.WARNING, logger="coulisse.interfaces.server.command"):
        result, configs = _serve_captured(monkeypatch, minilm, [], {**link, **env})
    assert result.exit_code == 0, result.output
    assert configs[0].port == port
    assert any("is the link Kubernetes sets for a Service named coulisse" in r.getMessage() for r in caplog.records)
    result, _ = _serve_captured(monkeypatch, minilm, ["--port", "tcp://10.0.0.7:8080"], {})
    assert result.exit_code == 2 and "not a valid integer range" in result.output


def test_teis_launcher_flags_without_counterpart_start_the_server(monkeypatch, minilm, caplog, tmp_path):
    """A TEI manifest's --prometheus-port, --otlp-endpoint, --hf-token... stopped the container ("No such option",
    exit 2: a crash loop). Each is accepted and said to have no effect here, except the token and the cache,
    carried to huggingface_hub's variables."""
    import logging
    import os

    args = ["--prometheus-port", "9000", "--tokenization-workers", "4", "--otlp-endpoint",
            "http://otel:4317", "--otlp-service-name", "tei", "--disable-spans", "--uds-path", "/tmp/tei",
            "--dense-path", "2_Dense", "--hf-api-token", "hf_old", "--hf-token", "hf_x",
            "--huggingface-hub-cache", str(tmp_path)]
    with caplog.at_level(logging.WARNING, logger="coulisse.interfaces.server.command"):
        result, configs = _serve_captured(monkeypatch, minilm, args, {})
        token, cache = os.environ.get("HF_TOKEN"), os.environ.get("HF_HUB_CACHE")
    assert result.exit_code == 0, result.output
    said = " ".join(r.getMessage() for r in caplog.records)
    for flag in ("--prometheus-port", "--tokenization-workers", "--otlp-endpoint",
                 "--disable-spans", "--uds-path", "--dense-path"):
        assert f"{flag} (text-embeddings-inference's) is accepted without effect" in said
    assert "served on --port, at /metrics" in said
    assert (token, cache) == ("hf_x", str(tmp_path)) and configs  # --hf-token wins over its old spelling


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--api-key", ""], {}, "--api-key"),
    ([], {"COULISSE_API_KEY": ""}, "COULISSE_API_KEY"),
    ([], {"API_KEY": ""}, "API_KEY"),
])
def test_an_empty_api_key_is_refused_rather_than_serving_everyone(monkeypatch, minilm, args, env, named):
    """An empty key (a secret that did not reach the manifest) turned the key off: every request was served, with
    no word (audit 46). It is a usage error naming where it came from."""
    monkeypatch.setenv("API_KEY", "")  # recorded, so the test's values are undone after it
    monkeypatch.delenv("API_KEY")
    result, configs = _serve_captured(monkeypatch, minilm, args, env)
    assert result.exit_code == 2 and not configs, result.output
    assert f"Invalid value for {named}" in result.output and "the API key is empty" in result.output


@pytest.mark.parametrize("key", [" k", "k ", "k\t", "a\x01b"])
def test_a_key_no_header_can_carry_is_refused(monkeypatch, minilm, key):
    """HTTP strips the spaces at a header value's ends: such a key matched no request, every answer a 401."""
    result, configs = _serve_captured(monkeypatch, minilm, ["--api-key", key], {})
    assert result.exit_code == 2 and "spaces at an end or control characters" in result.output, result.output


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--api-key", "s3cr3t"], {}, "--api-key"),
    ([], {"COULISSE_API_KEY": "s3cr3t"}, "COULISSE_API_KEY"),
    ([], {"API_KEY": "s3cr3t"}, "API_KEY (text-embeddings-inference's variable)"),
    ([], {"COULISSE_API_KEY": "", "API_KEY": "s3cr3t"}, "API_KEY (text-embeddings-inference's variable)"),
])
def test_the_start_says_a_key_is_needed_and_where_it_came_from(monkeypatch, minilm, args, env, named):
    """A stray TEI API_KEY in the environment turned the key on, unsaid: clients just got 401s."""
    monkeypatch.setenv("API_KEY", "")
    monkeypatch.delenv("API_KEY")
    result, configs = _serve_captured(monkeypatch, minilm, args, env)
    assert result.exit_code == 0 and configs, result.output
    assert f"requests need `Authorization: Bearer <key>` (the key from {named})" in result.stderr
    assert "s3cr3t" not in result.output  # the key itself is never said


@pytest.mark.parametrize(("given", "meant"), [("https://a.example/", "https://a.example"),
                                              ("a.example", "https://a.example"),
                                              ("http://localhost:3000/app", "http://localhost:3000")])
def test_a_cors_origin_no_browser_sends_is_a_warning(monkeypatch, minilm, caplog, given, meant):
    """A browser's Origin is scheme://host[:port]: an origin with a slash or without a scheme matched nothing,
    unsaid, and every call from that page failed CORS (audit 46; TEI compares the same way)."""
    import logging

    with caplog.at_level(logging.WARNING, logger="coulisse.interfaces.server.command"):
        result, configs = _serve_captured(monkeypatch, minilm, ["--cors-allow-origin", f"https://ok.example,{given}"],
                                          {})
    assert result.exit_code == 0 and configs, result.output
    said = [r.getMessage() for r in caplog.records if "matches no browser" in r.getMessage()]
    assert len(said) == 1 and repr(given) in said[0] and repr(meant) in said[0], said
