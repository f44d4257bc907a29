"""Lab.ctl reads a stand-in's JSON answer through `docker exec`; an exec that exits 0 with no output
(the engine lost it under load) is asked again, and one that never answers is named."""

import pytest

from ccdrill.lab.world import Lab, LabError


def lab_answering(*answers):
    lab = Lab.__new__(Lab)  # no engine: only ctl's handling of exec answers is under test
    calls = iter(answers)
    lab.exec = lambda host, argv, timeout: next(calls)
    return lab


def test_a_lost_answer_is_asked_again():
    lab = lab_answering((0, "", ""), (0, '{"in_use": 3}\n', ""))
    assert lab.ctl("sh-ipc-new", 7001) == {"in_use": 3}


def test_an_answer_lost_three_times_is_named():
    lab = lab_answering(*[(0, "", "")] * 3)
    with pytest.raises(LabError, match=r"sh-ipc-new:7001 ctl stats: exit 0 but no JSON answer 3 times"):
        lab.ctl("sh-ipc-new", 7001)


def test_a_failed_request_is_not_repeated():
    lab = lab_answering((1, "", "ctl 127.0.0.1:7001: connection refused"))
    with pytest.raises(LabError, match="connection refused"):
        lab.ctl("sh-ipc-new", 7001, {"op": "reset_peaks"})
