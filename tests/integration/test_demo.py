"""``python -m sb3_trpo_ext.demo``: its command-line errors."""

from __future__ import annotations

import pytest

from sb3_trpo_ext import demo


def test_unknown_env_is_one_line_with_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--env", "CartPol-v1", "--timesteps", "64", "--no-progress-bar"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "'CartPol-v1'" in lines[0] and "CartPole-v1" in lines[0]
    assert "Training" not in captured.out  # checked before anything is built

    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--env", "NotAnEnv-v0", "--timesteps", "64", "--no-progress-bar"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "'NotAnEnv-v0'" in line and "Traceback" not in line
