"""The [audit] section: strict like the rest, its paths relative to the config file's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, load_config

AUDIT = """
[audit]
signing_key_file = "keys/audit.ed25519"
checkpoint_dir = "audit-checkpoints"
"""


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir(exist_ok=True)
    path = folder / "tradewarden.toml"
    path.write_text(text)
    return path


def test_without_the_section_anchoring_is_off(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, "")), env={}).audit is None


def test_relative_paths_are_relative_to_the_config_file_not_the_cwd(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    audit = load_config(str(write(tmp_path, AUDIT)), env={}).audit
    assert audit is not None
    assert audit.signing_key_file == tmp_path / "etc" / "keys" / "audit.ed25519"
    assert audit.checkpoint_dir == tmp_path / "etc" / "audit-checkpoints"
    assert audit.checkpoint_interval_seconds == 1


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    audit = load_config(str(write(tmp_path, f"""
[audit]
signing_key_file = "{tmp_path / 'k'}"
checkpoint_dir = "/var/lib/tw-checkpoints"
""")), env={}).audit
    assert audit is not None
    assert audit.signing_key_file == tmp_path / "k" and audit.checkpoint_dir == Path("/var/lib/tw-checkpoints")


@pytest.mark.parametrize(("extra", "named"), [
    ("checkpoint_interval_seconds = 0", "checkpoint_interval_seconds"),
    ("checkpoint_interval_seconds = -1", "checkpoint_interval_seconds"),
    ("checkpoint_interval_seconds = inf", "checkpoint_interval_seconds"),
    ("checkpoint_interval_seconds = 100000", "checkpoint_interval_seconds"),
    ("signing_key = 'typo'", "signing_key"),
])
def test_bad_values_and_unknown_keys_are_refused_with_one_line(tmp_path: Path, extra: str, named: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(str(write(tmp_path, AUDIT + extra + "\n")), env={})
    assert f"audit.{named}" in str(error.value) and "\n" not in str(error.value)


def test_a_section_without_its_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"audit\.signing_key_file"):
        load_config(str(write(tmp_path, '[audit]\ncheckpoint_dir = "c"\n')), env={})
