from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python.logfile import LogFile
from twisted.python.usage import UsageError

from pymager_tx.process import tap
from pymager_tx.process.server import PymagerService
from pymager_tx.process.workers import worker_arguments

TOKEN = "a-write-token-0123456789"


def options(*arguments: str) -> tap.Options:
    parsed = tap.Options()
    parsed.parseOptions(list(arguments))
    return parsed


def test_twistd_finds_the_plugin() -> None:
    import twisted.plugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker, twisted.plugins)}
    assert makers["pymager"].options is tap.Options


def test_no_options_means_the_embedded_defaults() -> None:
    settings = options().settings
    assert settings.server.listen == "tcp:8000:interface=127.0.0.1"
    assert settings.storage.data_directory == Path("pymager-data")
    assert not settings.server.dev_mode


def test_command_line_overrides(tmp_path: Path) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text('[server]\nlisten = "tcp:9000:interface=127.0.0.1"\n[storage]\ndata_directory = "x"\n')
    settings = options(
        "--config", str(config), "--listen", "unix:/tmp/p.sock", "--data-dir", "/srv/d", "--dev"
    ).settings
    assert (settings.server.listen, settings.storage.data_directory, settings.server.dev_mode) == (
        "unix:/tmp/p.sock",
        Path("/srv/d"),
        True,
    )


def test_a_bad_configuration_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text("[images]\njpeg_qualty = 90\n")
    with pytest.raises(UsageError, match=r"images\.jpeg_qualty: unknown setting"):
        options("--config", str(config))


@pytest.mark.parametrize(
    "listen", ["nonsense:8000", "tcp:port=eighty", "ssl:8443:interface=127.0.0.1:privateKey=/nonexistent.pem"]
)
def test_a_bad_endpoint_is_a_usage_error(listen: str) -> None:
    with pytest.raises(UsageError, match=r"server\.listen: .* is not an endpoint"):
        options("--listen", listen)


def test_open_writes_on_the_network_are_refused() -> None:
    with pytest.raises(UsageError, match="write_tokens"):
        options("--listen", "tcp:8000")


def test_the_network_with_tokens_or_explicit_permission(tmp_path: Path) -> None:
    config = tmp_path / "pymager.toml"
    config.write_text(f'[auth]\nwrite_tokens = ["{TOKEN}"]\n')
    assert options("--config", str(config), "--listen", "tcp:8000").tokens == (TOKEN,)
    config.write_text("[auth]\nallow_anonymous_writes = true\n")
    assert options("--config", str(config), "--listen", "tcp:8000").tokens == ()


def test_make_service(tmp_path: Path) -> None:
    service = tap.makeService(options("--data-dir", str(tmp_path)))
    assert isinstance(service, PymagerService)
    assert service.data_directory == tmp_path


def test_workers_from_the_command_line_or_the_file(tmp_path: Path) -> None:
    assert options().settings.server.workers == 1
    assert options("--workers", "4").settings.server.workers == 4
    config = tmp_path / "pymager.toml"
    config.write_text("[server]\nworkers = 2\n")
    assert options("--config", str(config)).settings.server.workers == 2
    with pytest.raises(UsageError, match="--workers"):
        options("--workers", "many")
    with pytest.raises(UsageError, match=r"server\.workers"):
        options("--workers", "0")


def test_a_worker_gets_the_settings_but_neither_the_wipe_nor_more_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pymager.toml").write_text("[server]\ndev_mode = true\nworkers = 3\n")
    first = options("--config", "pymager.toml", "--data-dir", "d", "--workers", "3", "--dev")
    arguments = first.worker_arguments()
    assert arguments == [f"--config={tmp_path / 'pymager.toml'}", f"--data-dir={tmp_path / 'd'}"]
    worker = options(*arguments, "--worker", "2")
    assert worker.worker == 2
    assert not worker.settings.server.dev_mode
    assert worker.settings.storage.data_directory == tmp_path / "d"


@pytest.mark.parametrize(
    ("log_file", "worker_log"),
    [("twistd.log", "twistd-worker2.log"), ("/var/log/pymager", "/var/log/pymager-worker2")],
)
def test_worker_logs_rotate_apart_from_the_first_process_log(
    tmp_path: Path, log_file: str, worker_log: str
) -> None:
    arguments = worker_arguments(["--config=x"], 2, log_file)
    assert f"--logfile={worker_log}" in arguments
    # twistd's own rotation of the first process's log must not take the
    # worker's rotated files for its own (it would stop logging for good).
    main = LogFile(Path(log_file).name, str(tmp_path), rotateLength=10)
    worker = LogFile(Path(worker_log).name, str(tmp_path), rotateLength=10)
    for _ in range(3):
        worker.write("w" * 20)
    assert len(worker.listLogs()) >= 2
    assert main.listLogs() == []
    main.write("m" * 20)
    main.write("m" * 20)
    assert main.listLogs() == [1]
    main.close()
    worker.close()
