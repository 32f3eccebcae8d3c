"""Every file fault of the catalogue, fed to its domain's reader functions directly (fast): the parsed input or a
one-line DataError/ConfigError that names the file and matches the fault, never another exception."""

from __future__ import annotations

import errno
import json
import os
import re

import pytest
from fault_catalogue import catalogue, payload_checkpoint
from sectorkit.core.errors import ConfigError, DataError, SectorkitError

FAULTS = catalogue()


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_each_file_fault_is_read_or_refused_in_one_line(fault, tmp_path) -> None:
    path = fault.make(tmp_path)
    expected = fault.reader_expect or fault.expect
    if expected is None:
        fault.read(path)  # a fault the domain tolerates by design: parsed without an error
        return
    with pytest.raises((DataError, ConfigError)) as caught:
        fault.read(path)
    message = str(caught.value)
    assert "\n" not in message and re.search(expected, message), message
    assert str(path.name) in message or str(path.parent) in message or "data." in message, message  # names the file or key


def test_a_full_or_read_only_disk_keeps_the_previous_output_and_says_which_folder(tmp_path, monkeypatch) -> None:
    """ENOSPC (simulated, as a full disk raises it) while replacing metrics.json: one line naming the folder, the
    previous file intact and no temporary file left."""
    from sectorkit.core.io import atomic_write_json

    target = atomic_write_json(tmp_path / "metrics.json", {"ap": 0.5})
    for code in (errno.ENOSPC, errno.EROFS):
        def failing_replace(src, dst, code=code):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(SectorkitError, match=rf"{tmp_path}: cannot write metrics\.json \({os.strerror(code)}\)"):
            atomic_write_json(target, {"ap": 0.9})
        monkeypatch.undo()
        assert json.loads(target.read_text()) == {"ap": 0.5}
        assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_manifest_paths_outside_its_folder_are_allowed_only_under_an_explicit_root(tmp_path) -> None:
    import pandas as pd
    from fault_catalogue import healthcare_manifest, read_healthcare

    manifest = healthcare_manifest(tmp_path / "data" / "images")
    shared = tmp_path / "data" / "shared"
    shared.mkdir()
    (manifest.parent / "img0.png").rename(shared / "img0.png")
    frame = pd.read_csv(manifest)
    frame.loc[0, "path"] = "../shared/img0.png"
    frame.to_csv(manifest, index=False)
    with pytest.raises(DataError, match=r"row 2 column 'path' names '\.\./shared/img0\.png', which resolves outside the manifest's folder"):
        read_healthcare(manifest)
    datasets = read_healthcare(manifest, allowed_root=str(tmp_path / "data"))
    assert sum(len(d) for d in datasets.values()) == len(frame)
    with pytest.raises(DataError, match=r"outside data\.allowed_root"):
        read_healthcare(manifest, allowed_root=str(tmp_path / "data" / "images"))


def test_a_pickled_checkpoint_of_a_blocked_module_is_refused_as_such(tmp_path) -> None:
    """torch words a blocked module (os, subprocess, ...) differently from other globals: both get a correct line."""
    from sectorkit.core.checkpoint import load_checkpoint

    payload_checkpoint(tmp_path / "payload.ckpt")
    with pytest.raises(DataError, match=r"payload\.ckpt: the checkpoint would call posix\.system when unpickled \(module posix is blocked"):
        load_checkpoint(tmp_path / "payload.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint at all")
    with pytest.raises(DataError, match=r"text\.ckpt: not a readable checkpoint \(not a file written by torch\.save\)"):
        load_checkpoint(tmp_path / "text.ckpt")
