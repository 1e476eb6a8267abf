"""jobflow/components.py, the one list of the components: each entry names a module, a settings
class and a field by text, which only importing them can check."""

from __future__ import annotations

import pytest

from jobflow.__main__ import main
from jobflow.components import COMMANDS, SERVICES


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_its_main_function(name: str) -> None:
    assert callable(COMMANDS[name].entry_point())


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_its_settings_and_its_port_setting(name: str) -> None:
    service = SERVICES[name]
    assert 1024 < service.default_port < 65536, "the images run as a user that cannot bind below"
    assert service.port_variable.startswith(service.env_prefix.upper())
    assert service.port_setting in service.settings_class().model_fields


def test_python_m_jobflow_offers_exactly_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["nothing-of-ours"])
    assert refused.value.code == 2
    offered = ", ".join(f"'{name}'" for name in COMMANDS)
    assert f"(choose from {offered})" in capsys.readouterr().err


def test_python_m_jobflow_gives_its_arguments_to_the_commands_that_take_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # dlq's own parser answers: the arguments reached it.
    with pytest.raises(SystemExit) as dlq:
        main(["dlq", "replay", "receiver-topic.dlq"])
    assert dlq.value.code == 2
    assert "replay takes --all" in capsys.readouterr().err
    with pytest.raises(SystemExit) as topics:
        main(["topics", "--all"])
    assert topics.value.code == 2
    assert "topics takes no arguments" in capsys.readouterr().err
