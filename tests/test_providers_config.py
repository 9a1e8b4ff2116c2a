"""Provider config: strict, data-only; errors name file, line and field."""
from __future__ import annotations

import textwrap

import pytest

from dispatchsim.providers import EndpointSet, ProviderConfigError, load_config, parse_config
from dispatchsim.yamlfile import lines_under, load_yaml
from dispatchsim.providers.behaviour import Fault, Latency, Mix, Respond, Sequence, Windows
from dispatchsim.providers.durations import parse_duration


def write(tmp_path, text: str):
    path = tmp_path / "providers.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_full_example_loads(tmp_path):
    path = write(tmp_path, """
        endpoints:
          acme:
            path: /hooks
            behaviour: {status: 200, body: '{"ok":true}', latency: {lognormal: {median: 80ms, sigma: 0.5}}}
            auth: {type: api_key, header: X-Api-Key, value: secret}
            signing_secret: whsec_MDEyMzQ1Njc4OWFiY2RlZg==
            verify_get: {status: 200}
            schema: {required: [id, type, channel]}
            results_callback: {url: "http://127.0.0.1:8080/api/integration/activity-results/tasks", delay: 5s}
          flaky:
            port: 18080
            behaviour:
              mix:
                - {p: 0.3, status: 503, retry_after: 2m}
                - {p: 0.05, fault: hang}
                - {status: 200}
          outage:
            behaviour:
              windows:
                - {from: 10m, to: 6h, fault: refuse}
              else:
                sequence:
                  - {times: 3, status: 500}
                  - 200
    """)
    cfg = load_config(path)
    assert list(cfg.endpoints) == ["acme", "flaky", "outage"]
    acme = cfg.endpoints["acme"]
    assert acme.behaviour == Respond(status=200, body=b'{"ok":true}',
                                     latency=Latency(kind="lognormal", a=0.08, b=0.5))
    assert acme.auth.value == "secret" and acme.schema.required == ("id", "type", "channel")
    assert acme.results_callback.delay == 5.0
    mix = cfg.endpoints["flaky"].behaviour
    assert isinstance(mix, Mix) and [p for p, _ in mix.choices] == pytest.approx([0.3, 0.05, 0.65])
    assert mix.choices[0][1].retry_after == "120"
    assert cfg.endpoints["flaky"].port == 18080
    outage = cfg.endpoints["outage"].behaviour
    assert isinstance(outage, Windows) and outage.windows[0].start == 600 and outage.windows[0].end == 21600
    assert isinstance(outage.otherwise, Sequence) and outage.otherwise.steps[1] == (1, Respond(status=200))


def test_shorthands():
    cfg = parse_config({"endpoints": {"a": {"behaviour": 503}, "b": {"behaviour": "hang"}, "c": None}})
    assert cfg.endpoints["a"].behaviour == Respond(status=503)
    assert cfg.endpoints["b"].behaviour == Fault(kind="hang")
    assert cfg.endpoints["c"].behaviour == Respond(status=200)


@pytest.mark.parametrize(("yaml_text", "line", "field", "message"), [
    ("""
     endpoints:
       acme:
         behaviour:
           status: teapot
     """, 4, "endpoints.acme.behaviour.status", "must be an integer 200..599"),
    ("""
     endpoints:
       acme:
         behavior: {status: 200}
     """, 3, "endpoints.acme.behavior", "unknown key 'behavior'"),
    ("""
     endpoints:
       acme:
         behaviour:
           mix:
             - {p: 0.5, status: 503}
             - {p: 0.7, status: 500}
     """, 4, "endpoints.acme.behaviour.mix", "sum to 1.2"),
    ("""
     endpoints:
       acme:
         behaviour:
           sequence:
             - {times: 2, status: 503}
             - {fault: refuse}
     """, 6, "endpoints.acme.behaviour.sequence[1].fault", "refuse closes the whole port"),
    ("""
     endpoints:
       acme:
         behaviour:
           windows:
             - {from: 6h, to: 10m, status: 503}
     """, 5, "endpoints.acme.behaviour.windows[0].to", "later than 'from'"),
    ("""
     endpoints:
       acme:
         behaviour: {fault: explode}
     """, 3, "endpoints.acme.behaviour.fault", "unknown fault 'explode'"),
    ("""
     endpoints:
       acme:
         behaviour: {fault: hang, body: x}
     """, 3, "endpoints.acme.behaviour.body", "unknown key 'body' in fault hang"),
    ("""
     endpoints:
       acme:
         behaviour: {status: 200, latency: {gamma: 2}}
     """, 3, "endpoints.acme.behaviour.latency.gamma", "unknown latency distribution"),
    ("""
     endpoints:
       acme:
         behaviour: {status: 200, latency: 5 parsecs}
     """, 3, "endpoints.acme.behaviour.latency", "expected a duration"),
    ("""
     endpoints:
       acme:
         auth: {type: bearer}
     """, 3, "endpoints.acme.auth", "bearer auth needs 'token'"),
    ("""
     endpoints:
       acme:
         auth: {type: oauth2}
     """, 3, "endpoints.acme.auth.type", "one of api_key, bearer, basic"),
    ("""
     endpoints:
       acme:
         results_callback: {url: ftp://x, delay: 5s}
     """, 3, "endpoints.acme.results_callback.url", "http(s) URL"),
    ("""
     endpoints:
       acme:
         path: /a
         path: /b
     """, 4, "endpoints.acme.path", "duplicate key"),
    ("""
     endpoints:
       acme:
         schema: {required: id}
     """, 3, "endpoints.acme.schema.required", "list of field names"),
    ("""
     endpoints:
       "bad name":
         behaviour: 200
     """, 2, "endpoints.bad name", "must be letters"),
    ("""
     endpoints:
       acme:
         verify_get: refuse
     """, 3, "endpoints.acme.verify_get.fault", "not in a mix, a sequence or verify_get"),
    ("""
     endpoints:
       acme:
         behaviour: {fault: truncated, body: abc, send: 3}
     """, 3, "endpoints.acme.behaviour.send", "less than the body length"),
    ("""
     listeners: {}
     """, 1, "listeners", "unknown key 'listeners'"),
])
def test_errors_name_file_line_and_field(tmp_path, yaml_text, line, field, message):
    path = write(tmp_path, yaml_text)
    with pytest.raises(ProviderConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.source, err.line, err.field) == (str(path), line, field)
    assert str(err).startswith(f"{path}:{line}: {field}: ")
    assert message in str(err)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, """
        endpoints:
          acme:
            behaviour: {status: 200
          other: {}
    """)
    with pytest.raises(ProviderConfigError, match=rf"^{path}:\d+: invalid YAML"):
        load_config(path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(ProviderConfigError, match="cannot read the providers file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ProviderConfigError, match="must be a mapping"):
        load_config(tmp_path / "empty.yaml")


def test_embedded_in_a_scenario_file_reports_the_scenario_line():
    text = textwrap.dedent("""
        name: outage
        providers:
          endpoints:
            acme:
              behaviour:
                status: 99
        activities: []
    """)
    data, lines = load_yaml(text, source="scenarios/outage.yaml")
    with pytest.raises(ProviderConfigError, match=r"^scenarios/outage.yaml:7: endpoints.acme.behaviour.status: "):
        parse_config(data["providers"], source="scenarios/outage.yaml", lines=lines_under(lines, ("providers",)))


def test_without_lines_the_field_is_still_named():
    with pytest.raises(ProviderConfigError, match=r"^<config>: endpoints.a.behaviour.mix\[0\].p: "):
        parse_config({"endpoints": {"a": {"behaviour": {"mix": [{"p": 2, "status": 500}]}}}})


def test_mix_without_rest_must_sum_to_one():
    with pytest.raises(ProviderConfigError, match="give one entry no 'p'"):
        parse_config({"endpoints": {"a": {"behaviour": {"mix": [{"p": 0.5, "status": 500}]}}}})


def test_duplicate_ports_rejected():
    """The error said "two endpoints use the same port" at ``endpoints``: not which, nor which port."""
    with pytest.raises(ProviderConfigError) as err:
        parse_config({"endpoints": {"a": {"port": 9000}, "b": {"port": 9001}, "c": {"port": 9000}}})
    assert str(err.value) == "<config>: endpoints.c.port: port 9000 is endpoint a's too: give each endpoint its own"


@pytest.mark.parametrize(("text", "seconds"), [
    (5, 5.0), (0.25, 0.25), ("250ms", 0.25), ("5s", 5.0), ("10m", 600.0), ("6h", 21600.0),
    ("1h30m", 5400.0), ("1d", 86400.0), ("2.5", 2.5),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 parsecs", "m5", -1, True, None, "1h 5x"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_host_must_be_an_ip():
    cfg = parse_config({"endpoints": {"a": {}}})
    with pytest.raises(ProviderConfigError, match="IP address"):
        EndpointSet(cfg, host="localhost")
