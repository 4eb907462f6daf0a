"""Trace readers: Philly and generic formats, times, validation errors."""

import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.sim.traces import parse_time, read_jobs, read_quotas


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_generic_jobs_in_seconds_or_iso(tmp_path):
    p = write(tmp_path, "jobs.csv", "submit_time,duration,gpus,tenant\n"
              "100,60,2,a\n2017-10-01T00:00:00Z,30,1,b\n0,10,16,a\n")
    fmt, jobs = read_jobs(p)
    assert fmt == "generic"
    assert [j.submit for j in jobs] == [0.0, 100.0, 1506816000.0]
    assert jobs[0].gpus == 16 and jobs[0].tenant == "a"


def test_philly_jobs_and_quotas_in_hosts_of_eight(tmp_path):
    jp = write(tmp_path, "p.csv", "timestamp,duration,num_gpus,gpu_time,cluster\n"
               "2017-10-09 07:01:55,66.0,1,66.0,11cb48\n")
    qp = write(tmp_path, "q.csv", "vc,node num\n11cb48,16\n")
    assert read_jobs(jp)[0] == "philly"
    assert read_quotas(qp) == ("philly", [read_quotas(qp)[1][0]])
    assert read_quotas(qp)[1][0].gpus == 128


def test_naive_iso_is_utc():
    assert parse_time("2017-10-01 00:00:00") == parse_time("2017-10-01T00:00:00+00:00")


def test_every_bad_cell_is_reported_with_line_and_column(tmp_path):
    p = write(tmp_path, "jobs.csv", "submit_time,duration,gpus,tenant\n"
              "yesterday,60,2,a\n5,-1,1.5,\n")
    with pytest.raises(InvalidInput) as e:
        read_jobs(p)
    locs = [x.loc for x in e.value.errors]
    assert locs == ["jobs.csv:2:submit_time", "jobs.csv:3:duration", "jobs.csv:3:gpus",
                    "jobs.csv:3:tenant"]
    assert e.value.code == "gpuplane.trace.invalid"


def test_unknown_header_names_the_expected_columns(tmp_path):
    p = write(tmp_path, "x.csv", "when,what\n1,2\n")
    with pytest.raises(InvalidInput) as e:
        read_jobs(p)
    assert "submit_time,duration,gpus,tenant" in e.value.errors[0].msg


def test_duplicate_tenant_in_quotas(tmp_path):
    p = write(tmp_path, "q.csv", "tenant,gpus\na,8\na,4\n")
    with pytest.raises(InvalidInput) as e:
        read_quotas(p)
    assert "duplicate" in e.value.errors[0].msg


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput) as e:
        read_jobs(tmp_path / "nope.csv")
    assert e.value.code == "gpuplane.trace.not_found"
