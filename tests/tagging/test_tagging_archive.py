"""Tagging a folder: what is tagged, skipped and why; incremental re-runs; failures that do
not stop the batch; cancel; the Ray path against the local one; search; the CLI.

One folder is tagged once for the module (real clips: bikes.mp4, and a montage of real clips
whose audio holds two espeak-ng sentences inside known shots; plus a text file, a text file
named .mp4, a truncated .mp4 and a second copy of bikes.mp4). Faces and OCR are left out:
no assertion here needs them, and they are the costliest models on two cores.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import mediagen
from bench.shots import make_montage
from core.jobs import Cancelled, HeadlessState
from core.store.project import Project
from core.tagging import TaggingError, archive
from core.tagging.archive import ArchiveRequest, describe_file, scan_folder, tag_archive, worker_pool
from core.tagging.features import FEATURES_KIND, FeatureConfig
from core.tagging.index import current, load_index, search_text
from core.tagging.shots import SHOTS_KIND

SR = 16000
FOX = "the quick brown fox jumps over the lazy dog"
GATE = "gate seven opens at nine"
# chaplin 0–1.6 s, city at night 1.6–6.0 s, Big Buck Bunny 6.0–9.6 s
SPEECH_SEGMENTS = (("chaplin", 0, 40), ("city_mpg", 0, 110), ("bbb_6ch", 10, 90))
SPOKEN = ((2.2, FOX, 1), (6.8, GATE, 2))  # (start s, sentence, shot it lies in)
CFG = FeatureConfig(faces=None, ocr=None)
BARE = FeatureConfig(tagger=None, detector=None, faces=None, vad=None, asr=None, ocr=None, text_embed=None)


def speak(text: str) -> np.ndarray:
    x = mediagen.speak(text, SR)
    return 0.5 * x / max(1e-6, float(np.abs(x).max()))


def make_speech_clip(path: Path) -> Path:
    audio = np.zeros(int(sum(n for _, _, n in SPEECH_SEGMENTS) / 25 * SR), np.float32)
    for start, text, _ in SPOKEN:
        x = speak(text)
        a = int(start * SR)
        audio[a:a + x.size] = x[:audio.size - a]
    make_montage(path, SPEECH_SEGMENTS, audio=audio, sample_rate=SR)
    return path


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory, sample):
    for name, _, _ in SPEECH_SEGMENTS:
        sample(name)
    d = tmp_path_factory.mktemp("archive")
    shutil.copyfile(sample("bikes"), d / "bikes.mp4")
    make_speech_clip(d / "speech.mp4")
    (d / "notes.txt").write_text("shot list, to do\n")
    mediagen.make_text_as_mp4(d / "broken.mp4")
    mediagen.truncate_copy(d / "speech.mp4", d / "cut_short.mp4", 0.5)
    (d / "copies").mkdir()
    shutil.copyfile(d / "bikes.mp4", d / "copies" / "bikes (1).mp4")
    return d


@pytest.fixture(scope="module")
def tagged(archive_dir, module_project):
    st = HeadlessState()
    result = tag_archive(ArchiveRequest(module_project, folder=str(archive_dir), features=CFG), st)
    assert st.progress == 1.0
    return module_project, result


def by_name(result) -> dict:
    return {Path(f.path).name: f for f in result.files}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_folder_is_tagged_and_junk_skipped_with_reasons(tagged, archive_dir):
    project, result = tagged
    files = by_name(result)
    assert set(files) == {"bikes.mp4", "speech.mp4"} and all(f.status == "tagged" for f in files.values())
    assert files["bikes.mp4"].shots == 6 and files["speech.mp4"].shots == 3
    reasons = {Path(p).relative_to(archive_dir).as_posix(): r for p, r in result.skipped}
    assert reasons["notes.txt"] == "not a media file"
    assert reasons["broken.mp4"].startswith("unreadable: ") and "broken.mp4" in reasons["broken.mp4"]
    assert reasons["cut_short.mp4"].startswith("unreadable: ")
    assert reasons["copies/bikes (1).mp4"] == f"duplicate of {archive_dir / 'bikes.mp4'} (same content)"
    assert len(reasons) == 4 and not result.failed
    assert sorted(Path(m.path).name for m in project.list_media()) == ["bikes.mp4", "speech.mp4"]
    # what was stored: a shots run, a features run, the shots track, and the index's tags
    idx = result.index
    assert idx is not None and len(idx) == 9 and idx.method == "pca"  # 9 shots: too few to train
    assert any("too few" in n or "at least" in n for n in result.notes)
    for f in files.values():
        kinds = [r.kind for r in project.list_runs(f.media_id)]
        assert kinds.count(SHOTS_KIND) == 1 and kinds.count(FEATURES_KIND) == 1
        assert any(t.kind == "shots" for t in project.load_tracks(f.media_id))
    bikes = [idx.tags[i] for i in idx.of_media(files["bikes.mp4"].media_id)]
    objects = {t.name for tags in bikes for t in tags if t.kind == "object"}
    assert {"bicycle", "person"} <= objects and ({"car", "cars"} & objects), objects
    speech = [idx.tags[i] for i in idx.of_media(files["speech.mp4"].media_id)]
    assert any(t.name == "speech" for t in speech[1]) and any(t.name == "speech" for t in speech[2])
    assert not any(t.name == "speech" for t in speech[0])
    assert len(load_index(project)) == 9


def test_scan_folder_alone_and_against_a_project(tagged, archive_dir):
    project, _ = tagged
    found, skipped = scan_folder(archive_dir)
    assert [Path(p).name for p in found] == ["bikes.mp4", "speech.mp4"] and len(skipped) == 4
    # the project holds bikes.mp4: a copy elsewhere is a duplicate of what it holds
    other = archive_dir.parent / "elsewhere"
    other.mkdir(exist_ok=True)
    shutil.copyfile(archive_dir / "bikes.mp4", other / "moved.mp4")
    found, skipped = scan_folder(other, project)
    assert found == [] and skipped[0][1].startswith("duplicate: the project already holds")
    with pytest.raises(TaggingError, match="not a folder"):
        scan_folder(archive_dir / "notes.txt")


def test_search_finds_the_spoken_shot_and_the_bicycles(tagged):
    project, result = tagged
    idx = load_index(project)
    emb = worker_pool().get("minilm")
    speech_id = by_name(result)["speech.mp4"].media_id
    # words of the transcript (the shot's description carries its TF-IDF keywords)
    hit = search_text(idx, "quick brown fox", emb, k=3)[0]
    assert hit.ref.media_id == speech_id and hit.ref.index == 1, hit
    hit = search_text(idx, "gate seven opens", emb, k=3)[0]
    assert hit.ref.media_id == speech_id and hit.ref.index == 2, hit
    hit = search_text(idx, "a person riding a bicycle", emb, k=3)[0]
    assert "bicycle" in {t.name for t in idx.tags[hit.index] if t.kind == "object"}, (hit, idx.tags[hit.index])


def test_rerun_after_adding_a_file_describes_only_the_new_one(tagged, archive_dir, monkeypatch):
    project, first = tagged
    mediagen.make_clip(archive_dir / "late" / "tone.mp4", duration=2.0)
    calls = []
    real = archive.describe_file
    monkeypatch.setattr(archive, "describe_file", lambda path, *a, **k: calls.append(Path(path).name) or
                        real(path, *a, **k))
    result = tag_archive(ArchiveRequest(project, folder=str(archive_dir), features=CFG), HeadlessState())
    assert calls == ["tone.mp4"]
    files = by_name(result)
    assert files["tone.mp4"].status == "tagged"
    assert files["bikes.mp4"].status == files["speech.mp4"].status == "reused"
    assert files["bikes.mp4"].media_id == by_name(first)["bikes.mp4"].media_id
    media = project.list_media()
    assert sorted(Path(m.path).name for m in media) == ["bikes.mp4", "speech.mp4", "tone.mp4"]
    for m in media:
        assert [r.kind for r in project.list_runs(m.id)].count(FEATURES_KIND) == 1
    assert len(result.index) == 10


def test_failing_file_does_not_stop_the_batch_and_is_redone_later(tmp_path, monkeypatch):
    for name, seconds in (("a.mp4", 1.0), ("b.mp4", 1.2), ("c.mp4", 1.4)):  # different content: no duplicates
        mediagen.make_clip(tmp_path / "in" / name, duration=seconds)
    real = archive.shot_features

    def breaks_on_b(path, *a, **k):
        if Path(path).name == "b.mp4":  # the shots were found; the features fail halfway
            raise RuntimeError("decoder fell over")
        return real(path, *a, **k)

    monkeypatch.setattr(archive, "shot_features", breaks_on_b)
    with pytest.raises(TaggingError, match=r"b\.mp4 failed while describing its shots: RuntimeError"):
        describe_file(str(tmp_path / "in" / "b.mp4"), BARE.params(), None)
    with Project.create(tmp_path / "p.kestrel") as project:
        result = tag_archive(ArchiveRequest(project, folder=str(tmp_path / "in"), features=BARE), HeadlessState())
        files = by_name(result)
        assert [files[n].status for n in ("a.mp4", "b.mp4", "c.mp4")] == ["tagged", "failed", "tagged"]
        assert "b.mp4" in files["b.mp4"].error and "decoder fell over" in files["b.mp4"].error
        assert result.index is not None and len(result.index) == 2
        monkeypatch.setattr(archive, "shot_features", real)
        again = by_name(tag_archive(ArchiveRequest(project, folder=str(tmp_path / "in"), features=BARE),
                                    HeadlessState()))
        assert [again[n].status for n in ("a.mp4", "b.mp4", "c.mp4")] == ["reused", "tagged", "reused"]
        assert len(project.list_media()) == 3


def test_cancel_keeps_finished_files_and_a_rerun_resumes(tmp_path):
    for name, seconds in (("a.mp4", 1.0), ("b.mp4", 1.2)):
        mediagen.make_clip(tmp_path / "in" / name, duration=seconds)
    with Project.create(tmp_path / "p.kestrel") as project:
        st = HeadlessState(on_partial=lambda _outcome: st.cancel())  # stop after the first file
        with pytest.raises(Cancelled):
            tag_archive(ArchiveRequest(project, folder=str(tmp_path / "in"), features=BARE), st)
        done = {Path(m.path).name: current(project, m.id) is not None for m in project.list_media()}
        assert done == {"a.mp4": True, "b.mp4": False}
        assert load_index(project) is None  # the index was not built
        result = tag_archive(ArchiveRequest(project, folder=str(tmp_path / "in"), features=BARE), HeadlessState())
        assert [f.status for f in result.files] == ["reused", "tagged"] and result.index is not None


def test_ray_path_gives_the_same_shots_and_features(tagged, archive_dir, tmp_path):
    ray = pytest.importorskip("ray")
    project, first = tagged
    paths = tuple(str(archive_dir / n) for n in ("bikes.mp4", "speech.mp4"))
    try:
        with Project.create(tmp_path / "ray.kestrel") as other:
            st = HeadlessState()
            result = tag_archive(ArchiveRequest(other, paths=paths, features=CFG, ray_address="local",
                                                ray_workers=2), st)
            assert result.engine == "ray" and not result.failed and st.progress == 1.0
            assert len({f.where for f in result.files}) == 2, "two workers shared the files"
            assert not ray.is_initialized(), "the job shuts down the Ray instance it started"
            for f in result.files:
                mine = by_name(first)[Path(f.path).name]
                (s1, a), (s2, b) = current(project, mine.media_id), current(other, f.media_id)
                assert [x.to_row() for x in s1] == [x.to_row() for x in s2]
                assert a.params == b.params and a.columns == b.columns
                for m in ("visual", "audio", "text"):
                    assert (a.present[m] == b.present[m]).all(), m
                    np.testing.assert_allclose(a.values[m], b.values[m], rtol=1e-3, atol=2e-3, err_msg=m)
                assert [w[2] for w in a.words] == [w[2] for w in b.words]
    finally:
        ray.shutdown()


def test_cli_tags_searches_exports_and_fails_only_when_nothing_is_tagged(tagged, archive_dir, tmp_path, capsys):
    from main import main

    project, _ = tagged
    rc = main(["tag", str(archive_dir), "--project", str(project.path), "--no-faces", "--no-ocr",
               "--search", "quick brown fox", "--k", "3", "--export", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"^bikes\.mp4: 6 shots, 10\.0 s — .*bicycle.*\(unchanged", out, re.M), out
    assert re.search(r"^speech\.mp4: 3 shots, .*speech", out, re.M), out
    assert "skipped " + str(archive_dir / "notes.txt") + ": not a media file" in out
    assert re.search(r"skipped .*bikes \(1\)\.mp4: duplicate of", out)
    hits = [ln for ln in out.splitlines() if re.match(r"^\s*-?\d\.\d{3}  ", ln)]
    assert len(hits) == 3 and "speech.mp4  00:01.60–00:06.00" in hits[0], out
    assert (tmp_path / "out" / "shots.csv").exists() and (tmp_path / "out" / "speech.srt").exists()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "readme.txt").write_text("nothing here")
    assert main(["tag", str(junk), "--project", str(tmp_path / "empty.kestrel")]) == 1
    assert "readme.txt: not a media file" in capsys.readouterr().out
